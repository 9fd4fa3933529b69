"""One image's whole path as `image_config` asks: decode, aspect-ratio bucket, crop/resize,
RGB8, re-encode, into an `ImagePayload` (the glue between the config and `datago.imaging`)."""

from __future__ import annotations

import time

from datago.config import ImageConfig
from datago.imaging.buckets import Bucket, BucketTable
from datago.imaging.decode import decode, jpeg_size
from datago.imaging.encode import encode_image
from datago.imaging.header import jpeg_scaled_size, pixel_format
from datago.imaging.resample import Resampler, default_resampler
from datago.imaging.transform import cover_size, crop_and_resize, to_rgb8
from datago.sample import ImagePayload
from datago.stats import StageTimes

__all__ = ["Bucket", "ImageProcessor"]


class ImageProcessor:
    """Turns encoded bytes into an `ImagePayload` as `image_config` asks. Thread-safe.

    With `crop_and_resize`, a JPEG's bucket is chosen from its header, so it can be decoded at
    the smallest DCT scale that still covers the bucket; one Lanczos3 pass then resamples the
    centred crop (upstream resizes, then resamples the crop a second time). JPEG pre-encoding
    converts what JPEG cannot hold (alpha, 16 bits) where upstream drops the sample; see
    `datago.imaging.encode.encode_image`.
    """

    def __init__(self, config: ImageConfig | None, *, resampler: Resampler | None = None) -> None:
        self.config = config or ImageConfig()
        self.resampler = resampler or default_resampler()
        self.buckets: BucketTable | None = None
        if self.config.crop_and_resize:
            self.buckets = BucketTable.build(
                self.config.default_image_size,
                self.config.downsampling_ratio,
                self.config.min_aspect_ratio,
                self.config.max_aspect_ratio,
            )

    def footprint(self, data: bytes, bucket: Bucket | None = None) -> tuple[int, Bucket | None]:
        """Bytes `process` holds for this image at most (encoded, decoded, output), from its
        header alone, and the bucket it goes to (`bucket` None: chosen from this image)."""
        header = pixel_format(data)
        limit = self.config.max_image_pixels
        if header is None or (limit is not None and header[0] * header[1] > limit):
            return len(data), bucket  # the decoder refuses it before it allocates
        width, height, pixel_bytes = header
        decoded = width * height * pixel_bytes
        output, area = 0, width * height
        if self.buckets is not None:
            bucket = bucket or self.buckets.choose(width, height)
            if not self.config.apply_exif_orientation:  # JPEGs decode at a reduced DCT scale
                scaled = jpeg_scaled_size(data, cover_size(width, height, bucket))
                decoded = decoded if scaled is None else scaled[0] * scaled[1] * pixel_bytes
            area = bucket[0] * bucket[1]
            output = area * pixel_bytes
        if self.config.image_to_rgb8 and pixel_bytes != 3:
            output += area * 3
        return len(data) + decoded + output, bucket

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
        additional images pass the main image's bucket. Masks skip `image_to_rgb8`; with
        `pre_encode_images` they are encoded as PNG whatever `encode_format` says. Returns the
        payload and the bucket used. Raises `DecodeError` for bytes that are not a decodable
        image.
        """
        config = self.config
        start = time.perf_counter()
        min_size = None
        if self.buckets is not None and not config.apply_exif_orientation:
            header_size = jpeg_size(data)
            if header_size is not None:
                bucket = bucket or self.buckets.choose(*header_size)
                min_size = cover_size(*header_size, bucket)
        pixels, original, decoder = decode(
            data,
            min_size=min_size,
            exif_orientation=config.apply_exif_orientation,
            max_pixels=config.max_image_pixels,
        )
        times.decoders[decoder] = times.decoders.get(decoder, 0) + 1
        decoded = time.perf_counter()
        times.decode_s += decoded - start

        if self.buckets is not None:
            bucket = bucket or self.buckets.choose(*original)
            pixels = crop_and_resize(pixels, original, bucket, self.resampler)
        if config.image_to_rgb8 and not is_mask:
            pixels = to_rgb8(pixels)
        if config.pre_encode_images:
            image_format = "png" if is_mask else config.encode_format
            quality = min(max(config.jpeg_quality, 1), 100)  # as the Rust image crate
            data, bit_depth = encode_image(pixels, image_format, quality)
            height, width = pixels.shape[:2]
            payload = ImagePayload(data, width, height, *original, -1, bit_depth, is_encoded=True)
        else:
            payload = ImagePayload.from_array(pixels, original)
        times.transform_s += time.perf_counter() - decoded
        return payload, bucket
