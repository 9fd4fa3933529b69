"""WebDataset members to samples: consecutive members sharing a key form one `RawSample`.

The rules (keys, which image is the main one, text members, skips) are in the guide's
"The webdataset source"; a member name is judged here, never used as a path."""

from __future__ import annotations

import contextlib
from typing import Any

from datago.sources.base import RawSample
from datago.sources.tar_stream import TarMember
from datago.stats import Stats

IMAGE_TYPES = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tiff", "tif"})
_JPEG = frozenset({"jpg", "jpeg"})
_WHEEL_TEXT = frozenset({"cls", "json", "txt"})
"""The text members the Rust wheel reads, with invalid UTF-8 replaced."""
MAX_NAME_CHARS = 4096
MAX_GROUP_MEMBERS = 1024
"""Most members one sample may have (real ones have a handful)."""
MAX_GROUP_BYTES = 1 << 30
"""Most bytes one sample may hold in memory (1 GiB, as for one tar member)."""


def name_fault(name: str) -> str | None:
    """Why a member name cannot give a sample id, or None when it is fine."""
    if len(name) > MAX_NAME_CHARS:
        return f"{len(name)} characters, over {MAX_NAME_CHARS}"
    if "\x00" in name:
        return "a NUL byte"
    if name.startswith("/"):
        return "an absolute path"
    if ".." in name and ".." in name.split("/"):
        return "a '..' component"
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # the tar parser keeps undecodable bytes as surrogates
            return "bytes that are not UTF-8"
    return None


def split_name(name: str) -> tuple[str, str] | None:
    """(key, lower-case extension) of a member path, or None when it has no extension."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot <= slash:
        return None
    return name[:dot], name[dot + 1 :].lower()


class SampleGrouper:
    """Groups the members of one shard into samples; keeps every `keep_count`-th from `keep_index`.

    `add` returns the sample that the new member completes (the previous group), `flush` the
    last one; `span` is then the stream bytes [start, end) of its members. Group numbers
    count every group of the shard, kept or not, so that readers of the same shard split its
    samples disjointly; a reader resumed mid-shard starts counting at `first_group`.
    """

    def __init__(
        self,
        source: str,
        reference_image_type: str,
        stats: Stats,
        keep_index: int = 0,
        keep_count: int = 1,
        first_group: int = 0,
    ) -> None:
        self.source = source
        reference = reference_image_type.lower()
        self.references = _JPEG if reference in _JPEG else frozenset({reference})
        self.stats = stats
        self.keep_index = keep_index
        self.keep_count = keep_count
        self.groups = first_group - 1
        """Number of the current group in the shard, `first_group - 1` before the first."""
        self.span = (0, 0)
        """Stream bytes [start, end) of the sample last returned."""
        self._first = self._last = 0  # of the current group's members
        self.key: str | None = None
        self.members: dict[str, bytes] = {}
        self.size = 0
        """Bytes held in `members`."""
        self.kept = False
        self.fault: tuple[str, str] | None = None
        """Kind and cause of a skip of the current group whatever else it holds (a bad name,
        its size)."""
        self.oversized = False
        """The group passed a cap: its members are dropped, and only a new key ends it."""

    def add(self, member: TarMember) -> RawSample | None:
        """Take one member; return the finished previous sample, if it is kept and valid."""
        fault = name_fault(member.name)
        parts = split_name(member.name)
        if parts is None:
            if fault is None:
                return None
            parts = member.name[:MAX_NAME_CHARS], ""  # counted, not silently ignored
        key, extension = parts
        done = None
        if key != self.key or (extension in self.members and not self.oversized):
            done = self._start(key)
            self._first = member.start
        self._last = member.end
        if fault is not None:
            self.fault = self.fault or ("bad member name", fault)
        if not self.oversized:
            self.members[extension] = member.data  # also when not kept: it marks repeats
            self.size += len(member.data)
            if len(self.members) > MAX_GROUP_MEMBERS or self.size > MAX_GROUP_BYTES:
                self._oversize()
        return done

    def flush(self) -> RawSample | None:
        """Finish the current group: its sample, or None when it is not kept or is skipped."""
        key, members, kept, fault = self.key, self.members, self.kept, self.fault
        self.span = (self._first, self._last)
        self._reset()
        if key is None or not kept:
            return None
        if fault is not None:
            self.stats.skip(fault[0], key[:200], fault[1])
            return None
        return self._build(key, members)

    def drop(self, cause: str) -> None:
        """Discard the current group, a skipped "shard fault" when it was kept."""
        key, kept = self.key, self.kept
        self._reset()
        if key is not None and kept:
            self.stats.skip("shard fault", key, cause)

    def truncate(self, pending: str | None, cause: str) -> RawSample | None:
        """The stream broke inside member `pending` (None: inside a header or unknown).

        Returns the current sample when `pending` starts a new key (so the current one is
        complete); the broken sample is counted as skipped.
        """
        parts = split_name(pending) if pending is not None else None
        if parts is None or parts[0] == self.key:
            self.drop(cause)
            return None
        done = self._start(parts[0])
        self.drop(cause)
        return done

    def _reset(self) -> None:
        self.key, self.members, self.size, self.kept = None, {}, 0, False
        self.fault, self.oversized = None, False

    def _oversize(self) -> None:
        """Drop the group's data at the cap; it becomes a skip whatever comes next."""
        self.members, self.size, self.oversized = {}, 0, True
        self.fault = self.fault or (
            "oversized sample",
            f"over {MAX_GROUP_MEMBERS} members or {MAX_GROUP_BYTES} bytes "
            "(dotted file names give a whole shard one key?)",
        )

    def _start(self, key: str) -> RawSample | None:
        """Finish the current group and open the next, numbered in shard order."""
        done = self.flush()
        self.key = key
        self.groups += 1
        self.kept = self.groups % self.keep_count == self.keep_index
        return done

    def _build(self, key: str, members: dict[str, bytes]) -> RawSample | None:
        image: bytes | None = None
        masks: dict[str, bytes] = {}
        additional: dict[str, bytes] = {}
        attributes: dict[str, Any] = {}
        first_image: str | None = None
        for extension, data in members.items():
            kind = extension.rpartition(".")[2]
            if kind in IMAGE_TYPES:
                if "mask" in extension:
                    masks[extension] = data
                elif extension in self.references and image is None:
                    image = data
                else:
                    additional[extension] = data
                    first_image = first_image or extension
            else:
                _add_text(attributes, extension, data)
        if image is None:
            if first_image is None:
                self.stats.skip("no image", key, "no member is an image")
                return None
            image = additional.pop(first_image)
        return RawSample(
            key,
            self.source,
            image,
            masks,
            additional,
            attributes_dict=attributes,
            optional_extras=True,
        )


def _add_text(attributes: dict[str, Any], extension: str, data: bytes) -> None:
    if extension in _WHEEL_TEXT:
        attributes[extension] = data.decode("utf-8", errors="replace")
        return
    with contextlib.suppress(UnicodeDecodeError):  # binary payloads (npy, pth): not ours
        attributes[extension] = data.decode("utf-8")
