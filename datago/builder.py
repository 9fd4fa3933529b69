"""Raw sample to `Sample`: read, decode and transform, in a decode thread, a chunk at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from datago.image_processor import Bucket, ImageProcessor
from datago.sample import ImagePayload, Sample
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
            built.append(build_sample(raw, processor, times))
            times.built += 1
        except Exception as exc:
            stats.skip(raw.id, f"{type(exc).__name__}: {exc}")
            built.append(None)
    return built, times


def build_sample(raw: RawSample, processor: ImageProcessor, times: StageTimes) -> Sample:
    """Decode the image, then masks and additional images into the image's bucket."""
    image = ImagePayload.empty()
    bucket: Bucket | None = None
    if raw.image is not None:
        image, bucket = processor.process(_read(raw.image, times), times)
    masks = {
        name: processor.process(data, times, bucket, is_mask=True)[0]
        for name, data in raw.masks.items()
    }
    additional = {
        name: processor.process(data, times, bucket)[0]
        for name, data in raw.additional_images.items()
    }
    return Sample(
        id=raw.id,
        source=raw.source,
        image=image,
        attributes=raw.attributes,
        duplicate_state=raw.duplicate_state,
        masks=masks,
        additional_images=additional,
        latents=raw.latents,
        coca_embedding=raw.coca_embedding,
        tags=raw.tags,
    )


def _read(image: bytes | Path, times: StageTimes) -> bytes:
    if isinstance(image, bytes):
        times.bytes_read += len(image)
        return image
    start = time.perf_counter()
    data = image.read_bytes()
    times.read_s += time.perf_counter() - start
    times.bytes_read += len(data)
    return data
