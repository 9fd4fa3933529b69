"""`initialize_logging`: upstream's switch for the library's log output, on stdlib logging."""

from __future__ import annotations

import logging
import os

_handler: logging.Handler | None = None
_LEVELS = {  # upstream's (Rust log crate) level names
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 1,
}


def initialize_logging(log_level: str | None = None) -> bool:
    """Send datago's logs to stderr at `log_level` (default: `DATAGO_LOG` or "warn").

    Returns False if logging was already initialised, as upstream does.
    """
    global _handler
    if _handler is not None:
        return False
    name = log_level or os.environ.get("DATAGO_LOG") or "warn"
    level = _LEVELS.get(name.lower())
    if level is None:
        raise ValueError(f"unknown log level {name!r}; use one of {', '.join(_LEVELS)}")
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("datago")
    logger.addHandler(_handler)
    logger.setLevel(level)
    return True
