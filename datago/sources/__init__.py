"""Where samples come from: local files, webdataset tar shards, the dataroom API."""
