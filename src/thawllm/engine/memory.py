"""Keep touched-but-unused memory out of snapshot images.

CRIU stores every present page of private anonymous memory. After a
warm-up, the KV cache contains pages that are present but carry no data the
next request needs. Dropping the all-zero pages of such buffers with
MADV_DONTNEED gives the same contents (zero-filled on the next touch) and
leaves them out of the image.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

PAGE_SIZE = mmap.PAGESIZE
MADV_DONTNEED = 4
M_MMAP_THRESHOLD = -3
# glibc's own default; setting it turns off the dynamic threshold.
DEFAULT_MMAP_THRESHOLD_BYTES = 128 * 1024
CHUNK_BYTES = 16 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

Range = tuple[int, int]


def private_anonymous_ranges() -> list[Range]:
    """Return the [start, end) ranges of this process's private anonymous writable mappings."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1] != "rw-p" or len(fields) > 5:
                continue
            start, end = (int(value, 16) for value in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def new_ranges(before: list[Range], after: list[Range]) -> list[Range]:
    """Return the parts of AFTER that no range of BEFORE covers."""
    result = []
    for start, end in after:
        pieces = [(start, end)]
        for old_start, old_end in before:
            pieces = [part for piece in pieces for part in _subtract(piece, (old_start, old_end))]
        result.extend(pieces)
    return result


def _subtract(piece: Range, hole: Range) -> list[Range]:
    start, end = piece
    hole_start, hole_end = hole
    if hole_end <= start or hole_start >= end:
        return [piece]
    return [part for part in ((start, hole_start), (hole_end, end)) if part[0] < part[1]]


def drop_zero_pages(ranges: list[Range]) -> int:
    """Release the all-zero pages in RANGES; return the bytes released.

    RANGES must be memory that no other thread writes meanwhile.
    """
    released = 0
    for start, end in ranges:
        for chunk_start in range(start, end, CHUNK_BYTES):
            chunk_end = min(chunk_start + CHUNK_BYTES, end)
            released += _drop_zero_pages_in(chunk_start, chunk_end)
    return released


def _present_pages(start: int, end: int) -> np.ndarray:
    """Return a mask of the pages in [start, end) that are in memory, from /proc/self/pagemap."""
    count = (end - start) // PAGE_SIZE
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(start // PAGE_SIZE * 8)
        entries = np.frombuffer(pagemap.read(count * 8), dtype=np.uint64)
    return (entries >> np.uint64(63)).astype(bool)


def _drop_zero_pages_in(start: int, end: int) -> int:
    present = _present_pages(start, end)
    if not present.any():
        return 0
    pages = np.frombuffer((ctypes.c_char * (end - start)).from_address(start), dtype=np.uint64)
    pages = pages.reshape(-1, PAGE_SIZE // 8)
    zero = np.zeros(len(present), dtype=bool)
    # Only present pages are read, through views: reading the others would map them in.
    for first, last in _runs(present):
        zero[first:last] = ~pages[first:last].any(axis=1)
    released = 0
    for first, last in _runs(zero):
        address, length = start + first * PAGE_SIZE, (last - first) * PAGE_SIZE
        if _libc.madvise(address, length, MADV_DONTNEED) == 0:
            released += length
    return released


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Return the [first, last) index ranges where MASK is true."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return [(int(first), int(last)) for first, last in zip(edges[::2], edges[1::2])]


def fix_mmap_threshold() -> None:
    """Make glibc serve every large allocation with its own mapping, never from the heap.

    glibc raises its mmap threshold after a large block is freed, so a KV
    cache allocated again after a context is freed would land in [heap],
    among other data, where its zero pages could not be distinguished from other data.
    """
    _libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD_BYTES)
