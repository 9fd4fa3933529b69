"""Gzip-compressed shards (`.tar.gz`, `.tgz`): inflate a stream if it starts with gzip's magic.

Detection is by content, not by name, so a plain tar passes through untouched whatever it is
called. Concatenated gzip members are inflated one after the other, as `gzip` does.
A fed chunk may inflate to at most `MAX_INFLATED_PER_CHUNK` bytes, a cheap guard against
gzip bombs: zlib stops there and the stream is a `TarFormatError` (real shards of images
inflate about 1:1; deflate's worst case is ~1000:1).
"""

from __future__ import annotations

import zlib

from datago.sources.tar_stream import TarFormatError, TruncatedTarError

_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS

MAX_INFLATED_PER_CHUNK = 256 << 20
"""Plain bytes one fed chunk may yield (a 4 MiB read: a ratio of 64)."""


class GzipStreamInflater:
    """Turns chunks of a possibly gzipped stream into chunks of the plain stream."""

    def __init__(self) -> None:
        self._head = b""  # the first bytes, until there are enough to recognise gzip
        self._inflater: zlib._Decompress | None = None
        self._plain: bool | None = None

    @property
    def gzipped(self) -> bool:
        """The stream was recognised as gzip (False before its first bytes)."""
        return self._plain is False

    def feed(self, chunk: bytes) -> bytes:
        """The plain bytes that `chunk` yields (possibly none yet)."""
        if self._plain is None:
            self._head += chunk
            if len(self._head) < len(_MAGIC):
                return b""
            chunk, self._head = self._head, b""
            self._plain = not chunk.startswith(_MAGIC)
            if not self._plain:
                self._inflater = zlib.decompressobj(_GZIP_WBITS)
        if self._inflater is None:
            return chunk
        pieces = []
        size, budget = len(chunk), MAX_INFLATED_PER_CHUNK
        try:
            while chunk:
                if budget <= 0:  # a max_length of 0 would mean no limit
                    raise _bomb(size)
                pieces.append(self._inflater.decompress(chunk, budget))
                budget -= len(pieces[-1])
                if self._inflater.unconsumed_tail:
                    raise _bomb(size)
                # After a member: another one, or zero padding (never the start of a member).
                chunk = self._inflater.unused_data.lstrip(b"\x00") if self._inflater.eof else b""
                if chunk:
                    self._inflater = zlib.decompressobj(_GZIP_WBITS)
        except zlib.error as exc:
            raise TarFormatError(f"corrupt gzip stream: {exc}") from None
        return b"".join(pieces)

    def finish(self) -> None:
        """Check that a gzip stream was not cut inside a member."""
        if self._head:
            raise TarFormatError(f"stream of {len(self._head)} byte(s): not a tar archive")
        if self._inflater is not None and not self._inflater.eof:
            raise TruncatedTarError("gzip stream truncated")


def _bomb(size: int) -> TarFormatError:
    return TarFormatError(
        f"a gzip chunk of {size} bytes inflates to more than {MAX_INFLATED_PER_CHUNK}: a gzip bomb?"
    )
