"""datago: a pure-Python asyncio image data loader."""
