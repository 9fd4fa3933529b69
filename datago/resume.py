"""The saved state of a reader: what `DatagoClient.state_dict()` returns and loads back.

Version 2, JSON-ready:
```
{"version": 2,
 "epoch": 0, "position": 280, "delivered": 278,   # pass, source samples consumed, delivered
 "seed": 11,                                      # the shuffle seed (picked if not given)
 "source": {...} | null,     # the source node's state after the last delivered sample
 "config": {...}}            # what the state depends on: source_type, split, the node's keys
```
`source` is null at the start of a pass. A state without `version` (datago-py before 2) is
loaded too, and resumed by replaying the source up to `position`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datago.config import ClientConfig
from datago.engine import Cursor
from datago.errors import ConfigError
from datago.sources import node_of
from datago.sources.base import Position, Split

STATE_VERSION = 2


def fingerprint(config: ClientConfig, split: Split) -> dict[str, Any]:
    """The parts of a config (and split) a saved state depends on, as JSON values."""
    node = node_of(config.source_type)
    return {
        "source_type": config.source_type,
        "split": split.describe(),
        **node.fingerprint(config.source_config, split),
    }


def save(
    cursor: Cursor, position: Position | None, config: ClientConfig, split: Split
) -> dict[str, Any]:
    """The state of a reader at `cursor`, whose last delivered sample left the source at
    `position` (None: at `cursor.source`)."""
    return {
        "version": STATE_VERSION,
        "epoch": max(cursor.epoch, 0),
        "position": cursor.position,
        "delivered": cursor.delivered,
        "seed": getattr(config.source_config, "seed", None),
        "source": position.state() if position is not None else cursor.source,
        "config": fingerprint(config, split),
    }


def load(state: Mapping[str, Any], config: ClientConfig, split: Split) -> Cursor:
    """The cursor of `state`; raises `ConfigError` naming what differs from `config`."""
    version = state.get("version", 1)
    if version not in (1, STATE_VERSION):
        raise ConfigError(
            f"this state is of version {version!r}; this datago reads versions 1 and "
            f"{STATE_VERSION}"
        )
    try:
        epoch, position, delivered = (int(state.get(key) or 0) for key in _CURSOR_KEYS)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"this state's epoch/position/delivered are not integers: {exc}"
        ) from None
    if version == 1:
        return Cursor(epoch, position, delivered)
    saved, now = state.get("config"), fingerprint(config, split)
    if not isinstance(saved, Mapping):
        raise ConfigError("this state has no 'config' object: it was not saved by state_dict()")
    for key in [*now, *(key for key in saved if key not in now)]:  # the first that differs
        if saved.get(key) != now.get(key):
            raise ConfigError(
                f"this state was saved with another {_describe(key)}: {saved.get(key)!r}, "
                f"not {now.get(key)!r}; resume with the config and split it was saved with"
            )
    source = state.get("source")
    if source is not None and not isinstance(source, Mapping):
        raise ConfigError(f"this state's 'source' must be an object or null, got {source!r}")
    return Cursor(epoch, position, delivered, None if source is None else dict(source))


_CURSOR_KEYS = ("epoch", "position", "delivered")


def _describe(key: str) -> str:
    if key == "split":
        return "split [rank, world_size, worker, num_workers]"
    return key if key == "source_type" else f"source_config.{key}"
