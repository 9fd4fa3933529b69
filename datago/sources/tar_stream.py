"""An incremental tar reader: feed it chunks of a stream, get back the regular files in it.

Reads ustar, GNU (`././@LongLink` long names) and pax (`path`, `size` records) headers from
512-byte blocks itself, because `tarfile` costs ~30-40 us per member of GIL-held Python and
wants a seekable or blocking file. Directories, links and devices are skipped. The stream
ends at the first zero block; ending at a member boundary without one is accepted (as
`tarfile` does), ending inside a header or a member is `TruncatedTarError`.
"""

from __future__ import annotations

from typing import NamedTuple

from datago.errors import SourceError

BLOCK = 512
_REGULAR = frozenset(b"0\x007")
_NO_DATA = frozenset(b"123456")  # links, devices, directories, fifos: their size field lies
_ZERO_BLOCK = bytes(BLOCK)


class TarMember(NamedTuple):
    """A regular file of the archive: its path and its whole content."""

    name: str
    data: bytes


class TarFormatError(SourceError):
    """The stream is not a tar archive, or a header is corrupt."""


class TruncatedTarError(TarFormatError):
    """The stream stopped inside a header or a member."""


class TarStreamParser:
    """Turns a tar byte stream, fed in chunks of any size, into `TarMember`s."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0  # bytes of `_buffer` already consumed
        self._header: tuple[str, int, int] | None = None  # name, size, type of the next data
        self._long_name: str | None = None
        self._pax: dict[str, str] = {}
        self.ended = False
        """The end-of-archive block was read; later bytes are ignored."""
        self.offset = 0
        """Bytes of the stream consumed so far (headers and whole members)."""

    @property
    def pending_name(self) -> str | None:
        """The member whose header was read but whose data has not fully arrived."""
        return self._header[0] if self._header is not None else None

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[TarMember]:
        """Append `chunk` to the stream; return the members it completes, in order."""
        if self.ended:
            return []
        buffer = self._buffer
        if self._start:
            del buffer[: self._start]
            self._start = 0
        buffer += chunk
        members: list[TarMember] = []
        position, end = 0, len(buffer)
        with memoryview(buffer) as view:
            while not self.ended:
                if self._header is None:
                    if end - position < BLOCK:
                        break
                    block = view[position : position + BLOCK]
                    self._header = self._read_header(block, self.offset + position)
                    position += BLOCK
                    continue
                name, size, kind = self._header
                padded = 0 if kind in _NO_DATA else -(-size // BLOCK) * BLOCK
                if end - position < padded:
                    break
                data = view[position : position + size]
                position += padded
                self._header = None
                if kind in _REGULAR and not name.endswith("/"):
                    members.append(TarMember(name, data.tobytes()))
                elif kind == ord("L"):
                    self._long_name = _text(data)
                elif kind == ord("x"):
                    self._pax = _pax_records(data, self.offset + position)
        self._start = position
        self.offset += position
        if self.ended:
            self._buffer = bytearray()
            self._start = 0
        return members

    def finish(self) -> None:
        """Check the stream did not stop inside a header or a member."""
        if self.ended:
            return
        left = len(self._buffer) - self._start
        if self._header is not None or left:
            where = f"member {self._header[0]!r}" if self._header else "a header"
            raise TruncatedTarError(f"tar stream truncated inside {where} at byte {self.offset}")

    def _read_header(self, block: memoryview, offset: int) -> tuple[str, int, int] | None:
        """Name, data size and type of the entry `block` starts; None at end of archive."""
        if block == _ZERO_BLOCK:
            self.ended = True
            return None
        raw = block.tobytes()
        stored = _number(raw[148:156], "checksum", offset)
        if stored != sum(raw) - sum(raw[148:156]) + 8 * 32:
            raise TarFormatError(f"bad tar header checksum at byte {offset}")
        kind = raw[156]
        size = _number(raw[124:136], "size", offset)
        name = _text(raw[0:100])
        if raw[257:263] == b"ustar\x00" and raw[345] != 0:
            name = f"{_text(raw[345:500])}/{name}"
        if kind in b"LKxg":
            return name, size, kind
        if self._long_name is not None:
            name, self._long_name = self._long_name, None
        if self._pax:
            name = self._pax.get("path", name)
            pax_size = self._pax.get("size", "")
            if pax_size.isdigit():  # decimal, unlike the header's octal
                size = int(pax_size)
            self._pax = {}
        return name, size, kind


def _text(field: bytes | memoryview) -> str:
    raw = bytes(field)
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes, what: str, offset: int) -> int:
    """An octal header field (base-256 when its first byte is 0x80, for sizes >= 8 GiB)."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\x00", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        raise TarFormatError(f"bad tar header {what} {digits!r} at byte {offset}") from None


def _pax_records(data: memoryview, offset: int) -> dict[str, str]:
    """The `length key=value\\n` records of a pax extended header."""
    records: dict[str, str] = {}
    raw = bytes(data)
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
