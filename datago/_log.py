"""`initialize_logging`: the Rust wheel's switch for the library's logs, on stdlib logging.

The filter is read as env_logger reads the wheel's: comma-separated directives, each a
level (`info`: the default for every target), `target=level` or a bare `target` (every
level), then optionally `/regex` (only messages it matches). Levels: `trace`, `debug`,
`info`, `warn` (or `warning`), `error`, `off`. Rust targets map to our loggers
(`datago::client` -> `datago.client`); targets outside datago (`reqwest`, `hyper`) have no
logger here and are ignored, as are directives env_logger would ignore (a bad level).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

_handler: logging.Handler | None = None
_OFF = logging.CRITICAL + 1
_LEVELS = {  # the Rust log crate's level names, and Python's "warning"
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": _OFF,
}
WHEEL_DEFAULT_FILTER = "error"
"""What the wheel's `initialize_logging()` shows without an argument or `RUST_LOG`."""


@dataclass(slots=True)
class LogFilter:
    """A parsed env_logger filter: a default level, levels per logger, a message regex."""

    default: int = _OFF
    levels: dict[str, int] = field(default_factory=dict)
    """Python logger name -> level, for the directives that name a datago target."""
    pattern: re.Pattern[str] | None = None
    ignored: list[str] = field(default_factory=list)
    """Directives that could not be read (env_logger skips them too)."""

    @classmethod
    def parse(cls, spec: str) -> LogFilter:
        directives, _, regex = spec.partition("/")
        parsed = cls()
        if regex:
            try:
                parsed.pattern = re.compile(regex)
            except re.error:
                parsed.ignored.append("/" + regex)
        for directive in filter(None, (part.strip() for part in directives.split(","))):
            target, equals, level_name = directive.partition("=")
            level = _LEVELS.get((level_name if equals else target).lower())
            if not equals and level is not None:
                parsed.default = level
            elif equals and level is None:
                parsed.ignored.append(directive)
            elif target == "datago" or target.startswith("datago::"):
                parsed.levels[target.replace("::", ".")] = logging.DEBUG if level is None else level
        return parsed

    def apply(self, handler: logging.Handler) -> None:
        """Set the `datago` loggers' levels and the handler's message filter."""
        logging.getLogger("datago").setLevel(self.levels.pop("datago", self.default))
        for name, level in sorted(self.levels.items()):
            logging.getLogger(name).setLevel(level)
        if self.pattern is not None:
            pattern = self.pattern
            handler.addFilter(lambda record: pattern.search(record.getMessage()) is not None)


def initialize_logging(log_level: str | None = None) -> bool:
    """Send datago's logs to stderr, filtered as the Rust wheel filters its own.

    The filter is `RUST_LOG` when set (it wins, as in the wheel), else `log_level`, else
    `DATAGO_LOG`, else "error" (the wheel's default). Returns False, doing nothing, if
    logging was already initialised, as the wheel does.
    """
    global _handler
    if _handler is not None:
        return False
    spec = (
        os.environ.get("RUST_LOG") or log_level or os.environ.get("DATAGO_LOG")
    ) or WHEEL_DEFAULT_FILTER
    parsed = LogFilter.parse(spec)
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    parsed.apply(_handler)
    logger = logging.getLogger("datago")
    logger.addHandler(_handler)
    for directive in parsed.ignored:  # shown whatever the level, as env_logger shows it
        message = "initialize_logging: ignored %r in the log filter %r"
        record = logger.makeRecord(
            "datago", logging.WARNING, __file__, 0, message, (directive, spec), None
        )
        _handler.handle(record)
    return True
