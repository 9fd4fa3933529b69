"""Raw sample to `Sample`: read, decode and transform, in a decode thread, a chunk at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from datago.image_processor import Bucket, ImageProcessor
from datago.sample import ImagePayload, LatentPayload, Sample
from datago.sources.base import RawSample
from datago.stats import StageTimes, Stats


def build_chunk(
    raws: list[RawSample], processor: ImageProcessor, stats: Stats, stop: threading.Event
) -> tuple[list[Sample | None], StageTimes]:
    """Build each sample; a failed one is counted in `stats`, logged and returned as None.

    Once `stop` is set (the pass is closing) it returns early, with fewer results."""
    times = StageTimes()
    built: list[Sample | None] = []
    for raw in raws:
        if stop.is_set():
            break
        try:
            built.append(build_sample(raw, processor, times, stats))
            times.built += 1
        except Exception as exc:
            stats.skip(type(exc).__name__, raw.id, str(exc))
            built.append(None)
    return built, times


def build_sample(
    raw: RawSample, processor: ImageProcessor, times: StageTimes, stats: Stats | None = None
) -> Sample:
    """Decode the image, then masks and additional images into the image's bucket.

    A mask or additional image that fails fails the sample, unless `raw.optional_extras`:
    then it is left out, counted in `stats` and logged."""
    image = ImagePayload.empty()
    bucket: Bucket | None = None
    if raw.image is not None:
        data = _read(raw.image, times)
        if isinstance(raw.image, Path):  # the engine could not estimate it before the read
            times.largest = max(times.largest, estimate_bytes(raw, processor, data))
        image, bucket = processor.process(data, times)
    masks: dict[str, ImagePayload] = {}
    additional: dict[str, ImagePayload] = {}
    if raw.masks or raw.additional_images:  # a file sample has neither: no cost
        masks = _extras(raw, raw.masks, processor, times, bucket, stats)
        additional = _extras(raw, raw.additional_images, processor, times, bucket, stats)
    return Sample(
        **raw.info(),
        image=image,
        masks=masks,
        additional_images=additional,
        latents={name: LatentPayload(data) for name, data in raw.latents.items()}
        if raw.latents
        else {},
    )


def _extras(
    raw: RawSample,
    members: dict[str, bytes],
    processor: ImageProcessor,
    times: StageTimes,
    bucket: Bucket | None,
    stats: Stats | None,
) -> dict[str, ImagePayload]:
    """Masks (`members is raw.masks`) or additional images, in the main image's bucket."""
    built = {}
    for name, data in members.items():
        try:
            built[name] = processor.process(data, times, bucket, is_mask=members is raw.masks)[0]
        except Exception as exc:
            if not raw.optional_extras or stats is None:
                raise
            stats.drop_member(raw.id, name, f"{type(exc).__name__}: {exc}")
    return built


def _read(image: bytes | Path, times: StageTimes) -> bytes:
    if isinstance(image, bytes):
        times.bytes_read += len(image)
        return image
    start = time.perf_counter()
    data = image.read_bytes()
    times.read_s += time.perf_counter() - start
    times.bytes_read += len(data)
    return data


def estimate_bytes(raw: RawSample, processor: ImageProcessor, image: bytes | None = None) -> int:
    """Bytes a raw sample holds at most while it is built, from its images' headers (`image`:
    the main image's bytes, when `raw.image` is a file); see `ImageProcessor.footprint`."""
    data = image if image is not None else raw.image
    total, bucket = 0, None
    if isinstance(data, bytes):
        total, bucket = processor.footprint(data)
    for other in (*raw.masks.values(), *raw.additional_images.values()):
        total += processor.footprint(other, bucket)[0]
    return total + sum(map(_size, raw.latents.values()))


def held_bytes(sample: Sample) -> int:
    """Bytes a built sample holds: its pixels or encoded payloads, and its latents."""
    payloads = (sample.image, *sample.masks.values(), *sample.additional_images.values())
    return sum(map(_size, payloads)) + sum(map(_size, sample.latents.values()))


def _size(value: object) -> int:
    """Bytes of an array, of bytes, or of the `data` of a payload holding one of them."""
    if isinstance(value, np.ndarray | memoryview):
        return value.nbytes
    if isinstance(value, bytes | bytearray):
        return len(value)
    data = getattr(value, "data", None)
    return 0 if data is None or data is value else _size(data)
