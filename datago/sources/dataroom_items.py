"""Dataroom pages and items checked against the API schema: metadata and the URLs to fetch.

Pure, no I/O. `parse_page` runs in the executor: a page of 2000 items with embeddings is
megabytes of JSON, too slow to parse on the event loop. A malformed item comes back as a
`MalformedItem` with the reason; the source counts it as skipped and goes on (upstream
panics and ends the whole stream).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

PayloadKind = Literal["masks", "additional_images", "latents"]
_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    bool: "a boolean",
}


class MalformedItem(ValueError):
    """An item does not follow the dataroom schema; `sample_id` is its id if it has one."""

    def __init__(self, sample_id: str, reason: str) -> None:
        super().__init__(reason)
        self.sample_id = sample_id


@dataclass(frozen=True, slots=True)
class ItemRefs:
    """An item's metadata, its image URL and its latent files, each routed to a payload kind."""

    id: str
    source: str
    attributes: dict[str, Any]
    duplicate_state: int
    tags: list[str]
    coca_embedding: list[float]
    image_url: str | None
    files: list[tuple[PayloadKind, str, str]] = field(default_factory=list)
    """(kind, latent_type, url) per entry of `latents`."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of `images/`: its items in order, and the absolute URL of the next page."""

    items: list[ItemRefs | MalformedItem]
    next_url: str | None


def parse_page(body: bytes) -> Page:
    """Parse `{"results": [...], "next": url | null}`; raises `ValueError` if it is not that."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ValueError(f"the body is not JSON ({exc})") from exc
    results = data.get("results") if isinstance(data, dict) else None
    next_url = data.get("next") if isinstance(data, dict) else None
    if not isinstance(results, list) or not isinstance(next_url, str | None):
        raise ValueError("the body is not {'results': [...], 'next': url or null}")
    items: list[ItemRefs | MalformedItem] = []
    for item in results:
        try:
            items.append(parse_item(item))
        except MalformedItem as exc:
            items.append(exc)
    return Page(items, next_url or None)


def payload_kind(latent_type: str, is_mask: bool) -> PayloadKind:
    """Upstream's routing: "image" and not "latent_" in the type -> additional image, then masks."""
    if "image" in latent_type and "latent_" not in latent_type:
        return "additional_images"
    return "masks" if is_mask else "latents"


def parse_item(item: Any) -> ItemRefs:
    """Check one result item; nulls become upstream's defaults (-1, [], [])."""
    if not isinstance(item, dict):
        raise MalformedItem("<unknown>", f"item is a {type(item).__name__}, not an object")
    sample_id = item.get("id")
    if not isinstance(sample_id, str) or not sample_id:
        raise MalformedItem("<unknown>", f"id must be a non-empty string, got {sample_id!r}")
    try:
        return _parse_fields(sample_id, item)
    except (TypeError, ValueError) as exc:
        raise MalformedItem(sample_id, str(exc)) from exc


def _parse_fields(sample_id: str, item: dict[str, Any]) -> ItemRefs:
    source = _typed(item, "source", str)
    attributes = _typed(item, "attributes", dict)
    duplicate_state = _optional(item, "duplicate_state", int)
    tags = _optional(item, "tags", list) or []
    if not all(isinstance(tag, str) for tag in tags):
        raise ValueError("tags must be a list of strings")
    return ItemRefs(
        id=sample_id,
        source=source,
        attributes=attributes,
        duplicate_state=-1 if duplicate_state is None else duplicate_state,
        tags=tags,
        coca_embedding=_embedding(item.get("coca_embedding")),
        image_url=_optional(item, "image_direct_url", str),
        files=[_latent_file(entry) for entry in _optional(item, "latents", list) or []],
    )


def _typed(item: dict[str, Any], key: str, kind: type[Any]) -> Any:
    value = item.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{key} must be {_JSON_TYPES[kind]}, got {_show(value)}")
    return value


def _optional(item: dict[str, Any], key: str, kind: type[Any]) -> Any:
    return None if item.get(key) is None else _typed(item, key, kind)


def _embedding(value: Any) -> list[float]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ValueError(f"coca_embedding must be an object, got {_show(value)}")
    vector = value.get("vector")
    if vector is None:
        return []
    if not isinstance(vector, list):
        raise ValueError(f"coca_embedding.vector must be a list, got {_show(vector)}")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector):
        raise ValueError("coca_embedding.vector must be a list of numbers")
    # Through float32, as the Rust wheel (and dataroom's vector index) stores them.
    return np.asarray(vector, dtype=np.float32).tolist()  # type: ignore[no-any-return]


def _latent_file(entry: Any) -> tuple[PayloadKind, str, str]:
    if not isinstance(entry, dict):
        raise ValueError(f"latents entries must be objects, got {_show(entry)}")
    latent_type = _typed(entry, "latent_type", str)
    url = _typed(entry, "file_direct_url", str)
    is_mask = _optional(entry, "is_mask", bool) or False
    return payload_kind(latent_type, is_mask), latent_type, url


def _show(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
