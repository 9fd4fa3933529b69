"""An incremental tar reader: feed it chunks of a stream, get back the regular files in it.

Reads ustar, GNU (`././@LongLink` long names) and pax (`path`, `size` records) headers from
512-byte blocks itself, because `tarfile` costs ~30-40 us per member of GIL-held Python and
wants a seekable or blocking file. Members are sliced out of the fed chunks (one copy per
byte, none for padding). Directories, links and devices are skipped.

The stream ends at the first zero block. Writers end an archive with two (tarfile, hence
webdataset's `TarWriter`; GNU tar; libarchive; Go's archive/tar), so a stream that stops
before one is `TruncatedTarError`, even at a member boundary (`tarfile` accepts that, and a
shard cut there would lose its last samples silently); ending inside a header or a member is
`TruncatedTarError` too, an empty stream (0 bytes) a `TarFormatError`. Sizes are checked
before anything is buffered: a member over `MAX_MEMBER_BYTES` or a long-name/pax header
over `MAX_HEADER_DATA_BYTES` is a `TarFormatError` (a corrupt or hostile header), so a lying
size field cannot exhaust memory.
Names are returned as stored (non-UTF-8 bytes as surrogate escapes); judging them is the
caller's job (`wds_groups`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from datago.errors import SourceError

BLOCK = 512
_REGULAR = frozenset(b"0\x007")
_NO_DATA = frozenset(b"123456")  # links, devices, directories, fifos: their size field lies
_ZERO_BLOCK = bytes(BLOCK)
_EXTENDED = frozenset(b"LKxg")  # GNU long name/link, pax local/global: data read into memory

MAX_MEMBER_BYTES = 1 << 30
"""Largest member accepted (1 GiB); members are held whole in memory."""
MAX_HEADER_DATA_BYTES = 1 << 20
"""Largest GNU long-name or pax extended header accepted (1 MiB)."""


@dataclass(frozen=True, slots=True)
class TarMember:
    """A regular file of the archive: its path, its whole content, and the stream bytes
    [start, end) it took (from its first header, long-name or pax ones included)."""

    name: str
    data: bytes
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


class TarFormatError(SourceError):
    """The stream is not a tar archive, or a header is corrupt."""


class TruncatedTarError(TarFormatError):
    """The stream stopped inside a header or a member."""


class TarStreamParser:
    """Turns a tar byte stream, fed in chunks of any size, into `TarMember`s."""

    def __init__(self, offset: int = 0) -> None:
        self._chunks: deque[memoryview] = deque()  # fed, not yet consumed; no copy made
        self._available = 0
        self._header: tuple[str, int, int] | None = None  # name, size, type of the next data
        self._long_name: str | None = None
        self._pax: dict[str, str] = {}
        self._member_start: int | None = None  # where the next member's first header began
        self.start = offset
        self.ended = False
        """The end-of-archive block was read; later bytes are ignored."""
        self.offset = offset
        """Position in the stream after the bytes consumed so far (headers and whole members);
        a parser fed from the middle of a stream starts at that `offset`."""
        self.error: TarFormatError | None = None
        """A corrupt header met after some members of a chunk: raised by the next call."""

    @property
    def pending_name(self) -> str | None:
        """The member whose header was read but whose data has not fully arrived."""
        return self._header[0] if self._header is not None else None

    def copy_bound(self, size: int) -> int:
        """At most how many bytes feeding `size` more copies out (0: it only queues them).

        Lets a caller on an event loop send the feeds that complete a big member to a thread.
        """
        if self.ended or self.error is not None:
            return 0
        wanted = BLOCK if self._header is None else _padded(self._header[1], self._header[2])
        total = self._available + size
        return total if total >= wanted else 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[TarMember]:
        """Append `chunk` to the stream; return the members it completes, in order."""
        if self.error is not None:
            raise self.error
        if self.ended:
            return []
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)  # ours: callers may reuse theirs
        if data:
            self._chunks.append(memoryview(data))
            self._available += len(data)
        members: list[TarMember] = []
        try:
            self._parse(members)
        except TarFormatError as exc:
            self._chunks.clear()
            self._available = 0
            self.error = exc  # raised by every later call
            if not members:
                raise  # else the next call raises it, after the members before the fault
        if self.ended:
            self._chunks.clear()
            self._available = 0
        return members

    def _parse(self, members: list[TarMember]) -> None:
        """Consume every complete header and member available, appending regular files."""
        while not self.ended:
            if self._header is None:
                if self._available < BLOCK:
                    return
                if self._member_start is None:
                    self._member_start = self.offset
                self._header = self._read_header(self._take(BLOCK, BLOCK), self.offset)
                self.offset += BLOCK
                continue
            name, size, kind = self._header
            padded = _padded(size, kind)
            if self._available < padded:
                return
            data = self._take(size, padded) if padded else b""
            self.offset += padded
            self._header = None
            if kind not in _EXTENDED:
                start, self._member_start = self._member_start, None
                if kind in _REGULAR and not name.endswith("/"):
                    members.append(TarMember(name, data, start or 0, self.offset))
            elif kind == ord("L"):
                self._long_name = _text(data)
            elif kind == ord("x"):
                self._pax = _pax_records(data, self.offset - padded)

    def _take(self, size: int, consumed: int) -> bytes:
        """Consume the next `consumed` bytes; return a copy of the first `size` of them."""
        self._available -= consumed
        chunks = self._chunks
        first = chunks[0]
        if len(first) > consumed:  # the usual case: within one chunk, a single copy
            chunks[0] = first[consumed:]
            return first[:size].tobytes()
        parts = []
        while consumed:
            first = chunks.popleft()
            if len(first) > consumed:
                chunks.appendleft(first[consumed:])
                first = first[:consumed]
            parts.append(first[:size])
            size -= len(parts[-1])
            consumed -= len(first)
        return b"".join(parts)

    def finish(self) -> None:
        """Check the stream reached the end-of-archive block."""
        if self.error is not None:
            raise self.error
        if self.ended:
            return
        if self.offset == self.start and not self._available:
            raise TarFormatError("empty stream (0 bytes): not a tar archive")
        if self._header is not None or self._available:
            where = f"member {self._header[0]!r}" if self._header else "a header"
            raise TruncatedTarError(f"tar stream truncated inside {where} at byte {self.offset}")
        raise TruncatedTarError(
            f"tar stream truncated at byte {self.offset}, after a member and before the "
            "end-of-archive block"
        )

    def _read_header(self, raw: bytes, offset: int) -> tuple[str, int, int] | None:
        """Name, data size and type of the entry whose header is `raw`; None at the end."""
        if raw == _ZERO_BLOCK:
            self.ended = True
            return None
        stored = _number(raw[148:156], "checksum", offset)
        if stored != sum(raw) - sum(raw[148:156]) + 8 * 32:
            raise TarFormatError(f"bad tar header checksum at byte {offset}")
        kind = raw[156]
        size = _number(raw[124:136], "size", offset)
        name = _text(raw[0:100])
        if raw[257:263] == b"ustar\x00" and raw[345] != 0:
            name = f"{_text(raw[345:500])}/{name}"
        if kind in _EXTENDED:
            _check_size(name, size, MAX_HEADER_DATA_BYTES, offset)
            return name, size, kind
        if self._long_name is not None:
            name, self._long_name = self._long_name, None
        if self._pax:
            name = self._pax.get("path", name)
            pax_size = self._pax.get("size", "")
            if pax_size.isascii() and pax_size.isdigit():  # decimal, unlike the header's octal
                size = int(pax_size)
            self._pax = {}
        if kind not in _NO_DATA:
            _check_size(name, size, MAX_MEMBER_BYTES, offset)
        return name, size, kind


def _padded(size: int, kind: int) -> int:
    """Bytes of data (whole blocks) after a header of this size and type."""
    return 0 if kind in _NO_DATA else -(-size // BLOCK) * BLOCK


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _check_size(name: str, size: int, limit: int, offset: int) -> None:
    if size > limit:
        raise TarFormatError(
            f"tar member {name[:200]!r} at byte {offset} claims {size} bytes, over the limit of "
            f"{limit}: corrupt or hostile header"
        )


def _number(field: bytes, what: str, offset: int) -> int:
    """An octal header field (base-256 when its first byte is 0x80, for sizes >= 8 GiB)."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\x00", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        raise TarFormatError(f"bad tar header {what} {digits!r} at byte {offset}") from None


def _pax_records(raw: bytes, offset: int) -> dict[str, str]:
    """The `length key=value\\n` records of a pax extended header."""
    records: dict[str, str] = {}
    position = 0
    while position < len(raw):
        space = raw.find(b" ", position)
        length = int(raw[position:space]) if raw[position:space].isdigit() else 0
        if space < 0 or length <= space - position:
            raise TarFormatError(f"bad pax header at byte {offset}")
        key, _, value = raw[space + 1 : position + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records
