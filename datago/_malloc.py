"""glibc malloc tuning for decode threads that allocate a fresh multi-megabyte array per image.

By default glibc serves such arrays with mmap, or trims them back to the OS when freed, so
every image pays page faults on brand-new memory. Raising the mmap and trim thresholds keeps
freed image buffers in the heap for the next image. It is process-wide, so the environment
variable `DATAGO_TUNE_MALLOC=0` turns it off; a no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum: allocations up to 32 MiB come from the heap
_TRIM_THRESHOLD = 256 << 20  # keep up to 256 MiB of freed memory per heap for reuse
_done = False


def tune_malloc() -> None:
    """Apply the thresholds, once per process."""
    global _done
    if _done:
        return
    _done = True
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    logger.debug("glibc malloc thresholds raised: %s", bool(ok))
