"""Typed, validated configuration: upstream's JSON config plus the environment variables.

`ClientConfig.from_json(text)` / `from_dict(d)` accept every key of Photoroom's datago with its
upstream default. A value of the wrong type or an impossible value raises `ConfigError` (a
`ValueError`) naming the key. Keys it does not know are ignored, as the Rust wheel ignores
them, with one WARNING naming them and the closest known key (`strict=True` raises instead).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from datago.errors import ConfigError
from datago.imaging.buckets import BucketTable
from datago.imaging.decode import DEFAULT_MAX_IMAGE_PIXELS

logger = logging.getLogger(__name__)

SourceType = Literal["db", "file", "webdataset"]

# Keys that appear in upstream configs but do nothing there; accepted so those configs run.
_UPSTREAM_NO_OP_KEYS = {
    "": {"rank", "world_size", "num_threads", "max_connections", "image_transform"},
    "source_config": {"shuffle", "return_latents", "return_duplicate_state", "max_connections"},
    "image_config": {"image_format"},  # newer upstream releases
}


def _check_rank(rank: int, world_size: int, path: str) -> None:
    if world_size < 0:
        raise ConfigError(f"{path}.world_size must be >= 0, got {world_size}")
    if rank < 0 or rank >= max(world_size, 1):
        raise ConfigError(f"{path}.rank must be in [0, world_size), got {rank} of {world_size}")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSourceConfig:
    """`source_type: "file"`: every image below `root_path`, walked recursively."""

    root_path: str
    random_sampling: bool = False
    rank: int = 0
    world_size: int = 0
    seed: int | None = None
    """Seed for `random_sampling` (ours; upstream is never reproducible). None: fresh entropy."""
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    """Object-store settings for an `s3://`, `gs://` or `az://` root (ours; guide)."""

    def validate(self, path: str) -> None:
        if not self.root_path:
            raise ConfigError(f"{path}.root_path must not be empty")
        _check_rank(self.rank, self.world_size, path)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebDatasetSourceConfig:
    """`source_type: "webdataset"`: tar shards from local paths, http(s) or object stores."""

    url: str | list[str]
    reference_image_type: str = "jpg"
    random_sampling: bool = False
    concurrent_downloads: int = 0
    auth_token: str = ""
    rank: int = 0
    world_size: int = 0
    seed: int | None = None
    shuffle_buffer_size: int = 256
    """Encoded samples held in the shuffle buffer when `random_sampling` (ours; upstream has
    none): about 256 x 300 KB = 77 MB for 1 MP JPEGs."""
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    """Object-store settings for `s3://`, `gs://` or `az://` shards (ours; guide)."""

    def validate(self, path: str) -> None:
        if not self.url:
            raise ConfigError(f"{path}.url must not be empty")
        if self.concurrent_downloads < 0:
            raise ConfigError(
                f"{path}.concurrent_downloads must be >= 0, got {self.concurrent_downloads}"
            )
        if self.shuffle_buffer_size < 1:
            raise ConfigError(
                f"{path}.shuffle_buffer_size must be >= 1, got {self.shuffle_buffer_size}"
            )
        _check_rank(self.rank, self.world_size, path)

    @property
    def downloads(self) -> int:
        """Shards streamed at once (upstream: 0 means 8)."""
        return self.concurrent_downloads or 8


@dataclass(frozen=True, slots=True, kw_only=True)
class DbSourceConfig:
    """`source_type: "db"`: the dataroom HTTP API (`DATAROOM_API_URL`)."""

    sources: str
    page_size: int
    sources_ne: str = ""
    require_images: bool = False
    require_embeddings: bool = False
    tags: str = ""
    tags_all: str = ""
    tags_ne: str = ""
    tags_ne_all: str = ""
    tags_empty: str = ""
    has_attributes: str = ""
    lacks_attributes: str = ""
    has_masks: str = ""
    lacks_masks: str = ""
    has_latents: str = ""
    lacks_latents: str = ""
    min_short_edge: int = 0
    max_short_edge: int = 0
    min_pixel_count: int = 0
    max_pixel_count: int = 0
    duplicate_state: int = 0
    attributes: str = ""
    random_sampling: bool = False
    rank: int = 0
    world_size: int = 0

    def validate(self, path: str) -> None:
        if self.page_size < 1:  # dataroom refuses over 2000; another server may not
            raise ConfigError(f"{path}.page_size must be >= 1, got {self.page_size}")
        _check_rank(self.rank, self.world_size, path)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    """`image_config`: aspect-ratio bucketing, colour conversion and re-encoding."""

    crop_and_resize: bool = False
    default_image_size: int = 0
    downsampling_ratio: int = 0
    min_aspect_ratio: float = 0.0
    max_aspect_ratio: float = 0.0
    pre_encode_images: bool = False
    image_to_rgb8: bool = False
    encode_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 92
    """0-255 as upstream's u8; used clamped to [1, 100], as the Rust image crate does."""
    apply_exif_orientation: bool = False
    """Rotate images by their EXIF orientation tag (ours; upstream never does)."""
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    """Pixel budget (width x height) of one decoded image (ours): a larger one is skipped as a
    decompression bomb before anything is allocated; None: no limit. The default lets
    through what the Rust wheel decodes (512 MiB of RGB8, ~179 MP)."""

    def validate(self, path: str) -> None:
        if self.encode_format not in ("png", "jpeg"):
            raise ConfigError(
                f"{path}.encode_format must be 'png' or 'jpeg', got {self.encode_format!r}"
            )
        if not 0 <= self.jpeg_quality <= 255:
            raise ConfigError(f"{path}.jpeg_quality must be in [0, 255], got {self.jpeg_quality}")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ConfigError(
                f"{path}.max_image_pixels must be >= 1 or null, got {self.max_image_pixels}"
            )
        if not self.crop_and_resize:
            return
        if self.downsampling_ratio <= 0:
            raise ConfigError(
                f"{path}.downsampling_ratio must be > 0 when crop_and_resize is true, "
                f"got {self.downsampling_ratio}"
            )
        if self.default_image_size < self.downsampling_ratio:
            raise ConfigError(
                f"{path}.default_image_size must be >= downsampling_ratio "
                f"({self.downsampling_ratio}) when crop_and_resize is true, "
                f"got {self.default_image_size}"
            )
        if not 0 < self.min_aspect_ratio <= self.max_aspect_ratio:
            raise ConfigError(
                f"{path}.min_aspect_ratio and max_aspect_ratio must satisfy 0 < min <= max, "
                f"got {self.min_aspect_ratio} and {self.max_aspect_ratio}"
            )
        try:  # an empty table would fail every sample, and only at the first one
            BucketTable.build(
                self.default_image_size,
                self.downsampling_ratio,
                self.min_aspect_ratio,
                self.max_aspect_ratio,
            )
        except ValueError as exc:
            raise ConfigError(
                f"{path}.default_image_size, downsampling_ratio, min_aspect_ratio and "
                f"max_aspect_ratio give no usable bucket table: {exc}"
            ) from None


SourceConfig = FileSourceConfig | WebDatasetSourceConfig | DbSourceConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """The whole client config, as upstream's JSON."""

    source_config: SourceConfig
    source_type: SourceType = "db"
    image_config: ImageConfig | None = None
    limit: int | None = None
    """Exactly this many samples per pass (upstream overshoots); None: the whole dataset."""
    samples_buffer_size: int = 64
    prefetch_buffer_size: int = 64
    max_buffer_bytes: int | None = None
    """Bytes the loader may hold (ours): encoded in the prefetch queue, in flight, ready, and
    the latest sample taken. None: room for samples_buffer_size + 1 of the largest sample so
    far, plus prefetch_buffer_size of the largest encoded one, whatever the thread count. A
    sample bigger than the budget still passes, alone."""

    @classmethod
    def from_json(cls, text: str, *, strict: bool = False) -> ClientConfig:
        """Parse upstream's JSON config text (see `from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from exc
        return cls.from_dict(data, strict=strict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = False) -> ClientConfig:
        """Parse a config dict (the JSON object); raise `ConfigError` naming any bad value.

        Unknown keys are ignored with one WARNING that names each and the closest known
        key; with `strict`, the first one raises `ConfigError`.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        from datago.sources import SOURCES  # the source registry imports this module

        data = dict(data)
        source_type = data.get("source_type", "db")
        if source_type not in SOURCES:
            raise ConfigError(f"source_type must be one of {sorted(SOURCES)}, got {source_type!r}")
        if "source_config" not in data:
            raise ConfigError("source_config is required")
        unknown: list[str] = []
        data["source_config"] = _build(
            SOURCES[source_type].config_type, data["source_config"], "source_config", unknown
        )
        if data.get("image_config") is not None:
            data["image_config"] = _build(
                ImageConfig, data["image_config"], "image_config", unknown
            )
        config = _build(cls, data, "", unknown, prebuilt={"source_config", "image_config"})
        if unknown and strict:
            raise ConfigError(f"unknown config key {unknown[0]}")
        if unknown:
            logger.warning("unknown config keys ignored: %s", "; ".join(unknown))
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict that `from_dict` parses back to an equal config."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        from datago.sources import SOURCES

        node = SOURCES.get(self.source_type)
        if node is None or not isinstance(self.source_config, node.config_type):
            raise ConfigError(
                f"source_config is a {type(self.source_config).__name__}, which is not the "
                f"config of source_type {self.source_type!r}"
            )
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"limit must be > 0, got {self.limit}")
        for key in ("samples_buffer_size", "prefetch_buffer_size", "max_buffer_bytes"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        self.source_config.validate("source_config")
        if self.image_config is not None:
            self.image_config.validate("image_config")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroup cpusets), not the
    machine's count. A CFS quota (`cpu.max`) is not seen; set DATAGO_MAX_TASKS there."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """What a pass runs with: the environment variables upstream reads (read once when a pass
    starts, unless given to the client) and our network timeouts (not config keys)."""

    max_tasks: int = field(default_factory=usable_cpus)
    max_retries: int = 3
    dataroom_api_url: str = ""
    dataroom_api_key: str = ""
    tune_malloc: bool = True
    backoff_base_s: float = 0.1
    """First retry delay; it doubles per attempt, up to 3 s."""
    stall_timeout_s: float = 60.0
    """A streamed download (a shard) fails, and is resumed, when no byte comes for this long."""
    page_timeout_s: float = 20.0
    """One dataroom page GET, headers and body, before it fails and is retried."""
    file_timeout_s: float = 60.0
    """One whole-file GET (a db image or latent), likewise."""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, *, max_tasks: int | None = None
    ) -> Environment:
        """Read `DATAGO_MAX_TASKS` (else `max_tasks`, else the usable CPUs),
        `DATAGO_MAX_RETRIES`, `DATAROOM_API_URL`/`_KEY` and `DATAGO_TUNE_MALLOC`."""
        defaults = cls() if max_tasks is None else cls(max_tasks=max_tasks)
        return cls(
            max_tasks=_env_int(env, "DATAGO_MAX_TASKS", defaults.max_tasks, minimum=1),
            max_retries=_env_int(env, "DATAGO_MAX_RETRIES", defaults.max_retries, minimum=1),
            dataroom_api_url=env.get("DATAROOM_API_URL", ""),
            dataroom_api_key=env.get("DATAROOM_API_KEY", ""),
            tune_malloc=env.get("DATAGO_TUNE_MALLOC", "1") != "0",
        )


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    """An integer variable; as upstream, a bad value falls back (to `default`, or up to
    `minimum`) instead of failing, with a warning."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        logger.warning("environment variable %s=%r is not an integer; using %d", name, raw, default)
        return default
    if value < minimum:
        logger.warning(
            "environment variable %s=%d is below %d; using %d", name, value, minimum, minimum
        )
        return minimum
    return value


_T = TypeVar("_T")


def _build(
    cls: type[_T],
    data: Any,
    path: str,
    unknown: list[str],
    prebuilt: frozenset[str] | set[str] = frozenset(),
) -> _T:
    """Instantiate the dataclass `cls` from a mapping, checking value types; keys it does not
    know go to `unknown`, each with a hint."""
    where = path or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    no_ops = _UPSTREAM_NO_OP_KEYS.get(path, set())
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else key
        if key not in names:
            if key in no_ops:
                logger.debug("config key %s does nothing (as upstream); ignored", dotted)
            else:
                unknown.append(f"{dotted!r}{_hint(key, names | no_ops, path)}")
            continue
        if key not in prebuilt:
            _check_type(value, hints[key], dotted)
        kwargs[key] = value
    missing = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{path + '.' if path else ''}{missing[0]} is required")
    return cls(**kwargs)


def _hint(key: str, known: set[str], path: str) -> str:
    """Why an unknown key may be there: the source type it belongs to, or the closest known
    key when one is close."""
    if path == "source_config":
        from datago.sources import SOURCES  # the source registry imports this module

        owners = [name for name, node in SOURCES.items() if key in _field_names(node.config_type)]
        if owners:
            return f" (a key of source_type {owners[0]!r})"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""  # a comment key, say


def _field_names(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_type(value: Any, hint: Any, key: str) -> None:
    if not _matches(value, hint):
        raise ConfigError(f"{key} must be of type {_describe(hint)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # json.loads takes NaN, Infinity
        raise ConfigError(f"{key} must be a finite number, got {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return " or ".join(repr(arg) for arg in typing.get_args(hint))
    if origin is list:
        return f"list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict:
        return "object"
    return "null" if hint is type(None) else str(getattr(hint, "__name__", hint))
