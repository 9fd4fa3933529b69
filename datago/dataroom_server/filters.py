"""Query parameters to checks on catalogue items, as dataroom's list filters.

The filters supported, and those refused, are listed in `datago.dataroom_server`. A bad
value or a refused filter raises `HTTPBadRequest`; a name dataroom does not know is ignored.
Partitions: dataroom's 48 shards, here picked by a SHA-256 of the id.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from aiohttp import web

from datago.dataroom_server.catalogue import Item

Predicate = Callable[[Item], bool]
UNSUPPORTED_FILTERS = frozenset(
    {"source", "source__empty", "aspect_ratio_fraction", "aspect_ratio_fraction__empty"}
    | {"coca_embedding__empty", "datasets", "datasets__empty"}
    | {f"datasets__{cmp}" for cmp in ("ne", "all", "ne_all")}
    | {
        f"date_{when}__{cmp}"
        for when in ("created", "updated")
        for cmp in ("gt", "gte", "lt", "lte")
    }
)
"""Dataroom's filters that this server does not apply: a 400, not a silently wider answer."""
UNSUPPORTED_COMPARATORS = frozenset(
    {"match", "match_phrase", "prefix", "not_match", "not_match_phrase", "not_prefix"}
)
_SHARDS = 48
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}
_NUMBER_COMPARE = {"": operator.eq} | {cmp: _COMPARE[cmp] for cmp in ("lt", "lte", "gt", "gte")}
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"detail": message}), content_type="application/json")


def reject_unsupported(query: Mapping[str, str], names: frozenset[str]) -> None:
    """A 400 naming the first parameter of `query` in `names`."""
    for key in query:
        if key in names:
            raise bad_request(
                f"{key} is a dataroom parameter this server does not support "
                "(see datago.dataroom_server for those it does)"
            )


def csv(value: str) -> list[str]:
    return [part for part in value.split(",") if part]


def boolean(value: str) -> bool | None:
    """true/1/yes or false/0/no, in any case; None for anything else."""
    lowered = value.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def int_param(query: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    """An integer parameter in [low, high], else a 400."""
    try:
        value = int(query.get(key, default))
    except ValueError:
        raise bad_request(f"{key} must be an integer") from None
    if not low <= value <= high:
        raise bad_request(f"{key} must be in [{low}, {high}], got {value}")
    return value


_LISTS: dict[str, Callable[[Item, list[str]], bool]] = {
    "sources": lambda item, names: item.source in names,
    "sources__ne": lambda item, names: item.source not in names,
    "tags": lambda item, names: any(name in item.tags for name in names),
    "tags__all": lambda item, names: all(name in item.tags for name in names),
    "tags__ne": lambda item, names: not any(name in item.tags for name in names),
    "tags__ne_all": lambda item, names: not all(name in item.tags for name in names),
    "has_attributes": lambda item, names: all(name in item.attributes for name in names),
    "lacks_attributes": lambda item, names: not any(name in item.attributes for name in names),
    "has_latents": lambda item, names: all(name in item.latents for name in names),
    "lacks_latents": lambda item, names: not any(name in item.latents for name in names),
    "has_masks": lambda item, names: all(name in item.latents for name in names),
    "lacks_masks": lambda item, names: not any(name in item.latents for name in names),
}


def predicates(query: Mapping[str, str]) -> list[Predicate]:
    """One check per filter parameter (partitions aside)."""
    checks: list[Predicate] = []
    for key, value in query.items():
        name, _, cmp = key.partition("__")
        if key in _LISTS:
            checks.append(partial(_in_list, test=_LISTS[key], names=csv(value)))
        elif name in ("short_edge", "pixel_count", "aspect_ratio") and cmp in _NUMBER_COMPARE:
            try:
                bound = float(value)
            except ValueError:
                raise bad_request(f"{key} must be a number, got {value!r}") from None
            op = _NUMBER_COMPARE[cmp]
            checks.append(partial(_compare_number, name=name, op=op, bound=bound))
        elif key == "tags__empty":
            expected = boolean(value)
            if expected is None:
                raise bad_request(f"tags__empty must be true/1/yes or false/0/no, got {value!r}")
            checks.append(partial(_has_no_tags, expected=expected))
        elif key == "duplicate_state":
            if value not in ("1", "2", "None"):
                raise bad_request(f"duplicate_state must be 1, 2 or None, got {value!r}")
            state = None if value == "None" else int(value)
            checks.append(partial(_has_duplicate_state, state=state))
        elif key == "attributes":
            checks += [_attribute_check(term) for term in csv(value)]
    return checks


def partition_check(query: Mapping[str, str]) -> list[Predicate]:
    """The `partition` of `partitions_count` check, if both are given."""
    if "partitions_count" not in query and "partition" not in query:
        return []
    if "partitions_count" not in query or "partition" not in query:
        raise bad_request("partitions_count and partition go together")
    count = int_param(query, "partitions_count", 0, 2, _SHARDS)
    index = int_param(query, "partition", 0, 0, count - 1)
    return [partial(_in_partition, count=count, index=index)]


def _in_list(item: Item, test: Callable[[Item, list[str]], bool], names: list[str]) -> bool:
    return test(item, names)


def _compare_number(item: Item, name: str, op: Callable[[Any, Any], Any], bound: float) -> bool:
    return bool(op(item.numbers()[name], bound))


def _has_no_tags(item: Item, expected: bool) -> bool:
    return (not item.tags) == expected


def _has_duplicate_state(item: Item, state: int | None) -> bool:
    return item.duplicate_state == state


def _in_partition(item: Item, count: int, index: int) -> bool:
    # Dataroom gives partition p the shards range(48)[p::count].
    shard = int.from_bytes(hashlib.sha256(item.id.encode()).digest()[:8], "little") % _SHARDS
    return shard % count == index


def _attribute_check(term: str) -> Predicate:
    """`name[__cmp]:value`; the value is read as the attribute's own type."""
    target, colon, raw = term.partition(":")
    name, _, cmp = target.rpartition("__") if "__" in target else (target, "", "eq")
    if cmp in UNSUPPORTED_COMPARATORS:
        raise bad_request(f"attributes comparator {cmp!r} is not supported by this server")
    if not colon or not name or cmp not in _COMPARE:
        raise bad_request(
            f"attributes filter must be name[__cmp]:value with cmp in {', '.join(_COMPARE)}, "
            f"got {term!r}"
        )
    op = _COMPARE[cmp]

    def check(item: Item) -> bool:
        actual = item.attributes.get(name)
        try:
            if isinstance(actual, bool):
                return bool(op(actual, raw.lower() == "true"))
            if isinstance(actual, int | float):
                return bool(op(actual, float(raw)))
            return isinstance(actual, str) and bool(op(actual, raw))
        except ValueError:
            return False

    return check
