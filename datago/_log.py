"""`initialize_logging`: upstream's switch for the library's log output, on stdlib logging."""

from __future__ import annotations

import logging
import os

_handler: logging.Handler | None = None


def initialize_logging(log_level: str | None = None) -> bool:
    """Send datago's logs to stderr at `log_level` (default: `DATAGO_LOG` or "warn").

    Returns False if logging was already initialised, as upstream does.
    """
    global _handler
    if _handler is not None:
        return False
    level_name = (log_level or os.environ.get("DATAGO_LOG") or "warn").upper()
    level = logging.getLevelName("WARNING" if level_name == "WARN" else level_name)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {log_level!r}; use debug, info, warn or error")
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("datago")
    logger.addHandler(_handler)
    logger.setLevel(level)
    return True
