"""One image's whole path: decode, aspect-ratio bucket, crop/resize, RGB8, re-encode."""

from __future__ import annotations

import time

from datago.config import ImageConfig
from datago.imaging.decode import decode_image
from datago.sample import ImagePayload
from datago.stats import StageTimes

Bucket = tuple[int, int]
"""A target (width, height)."""


class ImageProcessor:
    """Turns encoded bytes into an `ImagePayload` as `image_config` asks. Thread-safe."""

    def __init__(self, config: ImageConfig | None) -> None:
        self.config = config or ImageConfig()
        if (
            self.config.crop_and_resize
            or self.config.image_to_rgb8
            or self.config.pre_encode_images
        ):
            raise NotImplementedError("image transforms are not implemented yet")

    def process(
        self,
        data: bytes,
        times: StageTimes,
        bucket: Bucket | None = None,
        *,
        is_mask: bool = False,
    ) -> tuple[ImagePayload, Bucket | None]:
        """Decode and transform one image.

        `bucket` None means "choose the bucket from this image" (the main image); masks and
        additional images pass the main image's bucket. Returns the payload and the bucket used.
        """
        start = time.perf_counter()
        pixels, original_size = decode_image(
            data, exif_orientation=self.config.apply_exif_orientation
        )
        times.decode_s += time.perf_counter() - start
        return ImagePayload.from_array(pixels, original_size), bucket
