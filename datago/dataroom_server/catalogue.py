"""The catalogue of a local folder: one `Item` per image, with its sidecar files.

An item's id is the image's POSIX path relative to the root; its source is the first
directory of that path ("local" for a file at the top). Files beside `<stem>.<ext>`:
- `<stem>.json`, an object: `tags` (a list of strings), `duplicate_state` (1 or 2) and
  `coca_embedding` (a list of numbers) are item fields, every other key an attribute; a
  null field keeps its default, one of another type is left out with a warning;
- `<stem>.txt`: the `caption` attribute;
- `<stem>.<latent_type>.<ext>`: a latent file of that type, a mask when the type contains
  "mask" (`cat.mask.png`, `cat.image_depth.png`, `cat.latent_vae.npy`).
Attributes always hold the image's `width` and `height`.
"""

from __future__ import annotations

import json
import logging
import os
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_ITEM_FIELDS: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    "tags": (
        "a list of strings",
        lambda value: isinstance(value, list) and all(isinstance(tag, str) for tag in value),
        list,
    ),
    "duplicate_state": ("1 or 2", lambda value: _is_number(value) and value in (1, 2), int),
    "coca_embedding": (
        "a list of numbers",
        lambda value: isinstance(value, list) and all(_is_number(x) for x in value),
        lambda value: [float(x) for x in value],
    ),
}
"""Sidecar keys that are item fields: (the shape wanted, its check, the value kept)."""


@dataclass(slots=True)
class Item:
    """One image of the catalogue and its sidecar data."""

    id: str
    width: int
    height: int
    attributes: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    duplicate_state: int | None = None
    coca_embedding: list[float] | None = None
    latents: dict[str, str] = field(default_factory=dict)
    """latent_type -> media path, relative to the root."""

    @property
    def source(self) -> str:
        return self.id.split("/", 1)[0] if "/" in self.id else "local"

    def numbers(self) -> dict[str, float]:
        """The numeric fields dataroom filters on."""
        w, h = self.width, self.height
        return {"short_edge": min(w, h), "pixel_count": w * h, "aspect_ratio": w / h}


def scan_folder(root: Path) -> list[Item]:
    """Every image below `root` with its sidecars, sorted by id."""
    items = []
    for folder, _, names in os.walk(root):
        items += _scan_directory(root, Path(folder), sorted(names))
    return sorted(items, key=lambda item: item.id)


def _scan_directory(root: Path, folder: Path, names: list[str]) -> list[Item]:
    stems = {_stem(name) for name in names if _is_image(name)}
    images = [name for name in names if _is_image(name) and not _owner(name, stems)]
    primaries = {_stem(name) for name in images}
    extras: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        if owned := _owner(name, primaries):
            extras.setdefault(owned[0], []).append((owned[1], name))
        elif _stem(name) in primaries and name.endswith((".json", ".txt")):
            extras.setdefault(_stem(name), []).append((name.rsplit(".", 1)[1], name))
    items = []
    for name in images:
        path = folder / name
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as exc:
            logger.warning("not an image, left out: %s (%s)", path, exc)
            continue
        item = Item(path.relative_to(root).as_posix(), width, height, {})
        item.attributes = {"width": width, "height": height}
        for kind, extra in extras.get(_stem(name), []):
            try:
                _attach(item, kind, folder / extra, (folder / extra).relative_to(root).as_posix())
            except (OSError, ValueError) as exc:
                logger.warning("sidecar left out: %s (%s)", folder / extra, exc)
        items.append(item)
    return items


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _is_image(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def _owner(name: str, stems: set[str]) -> tuple[str, str] | None:
    """(stem, latent_type) if `name` is `<stem>.<latent_type>.<ext>` for one of `stems`."""
    found = None
    for position, char in enumerate(name):
        rest = name[position + 1 :]
        if char == "." and name[:position] in stems and "." in rest:
            found = (name[:position], _stem(rest))
    return found


def _attach(item: Item, kind: str, path: Path, rel: str) -> None:
    if kind == "txt":
        item.attributes["caption"] = path.read_text(encoding="utf-8").strip()
    elif kind == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key, (shape, check, keep) in _ITEM_FIELDS.items():
            value = data.pop(key, None)
            if value is None:
                continue
            if check(value):
                setattr(item, key, keep(value))
            else:
                logger.warning(
                    "sidecar field left out: %s: %s must be %s, got %s",
                    path,
                    key,
                    shape,
                    reprlib.repr(value),
                )
        item.attributes.update(data)
    else:
        item.latents[kind] = rel
