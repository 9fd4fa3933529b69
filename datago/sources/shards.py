"""Shard lists: brace expansion of `url`, and which shards (or samples) each part reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

from datago.errors import ConfigError
from datago.sources.base import Partition

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")


def expand_urls(url: str | list[str]) -> list[str]:
    """Every shard that `url` names: each string brace-expanded, in order."""
    patterns = [url] if isinstance(url, str) else url
    return [shard for pattern in patterns for shard in expand_braces(pattern)]


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: `{a,b}` lists, `{000..012}` zero-padded ranges, `{0..9..2}`.

    Braces nest; a brace pair with neither a comma nor a range stays literal.
    """
    start = pattern.find("{")
    while start >= 0:
        end = _closing_brace(pattern, start)
        if end < 0:
            break
        choices = _choices(pattern[start + 1 : end])
        if choices is not None:
            head, tails = pattern[:start], expand_braces(pattern[end + 1 :])
            return [
                f"{head}{middle}{tail}"
                for choice in choices
                for middle in expand_braces(choice)
                for tail in tails
            ]
        start = pattern.find("{", start + 1)
    return [pattern]


def _closing_brace(pattern: str, start: int) -> int:
    depth = 0
    for position in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[position], 0)
        if depth == 0:
            return position
    return -1


def _choices(inner: str) -> list[str] | None:
    """The alternatives of one brace pair's content, or None if it is not an expansion."""
    parts, depth, begin = [], 0, 0
    for position, char in enumerate(inner):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(inner[begin:position])
            begin = position + 1
    if parts:
        return [*parts, inner[begin:]]
    match = _RANGE.match(inner)
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    step = abs(int(match[3] or 1))
    if step == 0:
        raise ConfigError(f"source_config.url: brace range step must not be 0 in {{{inner}}}")
    padded = any(
        len(text.lstrip("-")) > 1 and text.lstrip("-")[0] == "0" for text in match.groups()[:2]
    )
    width = max(len(match[1]), len(match[2])) if padded else 0
    direction = 1 if last >= first else -1
    return [f"{value:0{width}d}" for value in range(first, last + direction, step * direction)]


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """The shards one part streams, and which samples of them it keeps."""

    shards: list[str]
    keep_index: int = 0
    keep_count: int = 1
    """The part keeps the samples numbered i (in shard order) with i % keep_count == keep_index."""


def plan_part(shards: list[str], part: Partition) -> ShardPlan:
    """Split by shard (every `count`-th from `index`) when there are enough shards.

    With fewer shards than parts, part p reads shard p % n alone, and the parts that share a
    shard take every k-th sample of it, so each part still downloads a single shard.
    """
    count = len(shards)
    if part.count <= count:
        return ShardPlan(shards[part.index :: part.count])
    shard = part.index % count
    sharing = (part.count - shard + count - 1) // count
    return ShardPlan([shards[shard]], part.index // count, sharing)
