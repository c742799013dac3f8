"""Page cache control for cold runs, and the disk's sequential read bandwidth.

posix_fadvise(POSIX_FADV_DONTNEED) drops the cached pages of one file and
needs no root, unlike /proc/sys/vm/drop_caches, which drops everything on
the machine. The kernel keeps pages that are dirty or mapped by a running
process, so the benchmark checks with mincore() how much of a file stayed
cached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import os
import time
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger("thaw.bench")

READ_CHUNK_BYTES = 1 << 20
DEFAULT_BANDWIDTH_SAMPLE_BYTES = 1 << 30
PAGE_SIZE = mmap.PAGESIZE

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


class PageCacheError(Exception):
    """A file's cached pages could not be dropped or counted."""


def drop_file_pages(path: Path) -> None:
    """Write back and drop PATH's pages from the page cache (pages mapped by a process stay)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PageCacheError(f"Cannot open {path} to drop its cached pages: {exc.strerror}.") from exc
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        raise PageCacheError(f"posix_fadvise(DONTNEED) failed on {path}: {exc.strerror}.") from exc
    finally:
        os.close(fd)


def drop_pages(paths: Iterable[Path]) -> None:
    for path in paths:
        drop_file_pages(path)


def cached_fraction(path: Path) -> float:
    """Return the fraction of PATH's pages that are in the page cache now, from mincore()."""
    size = path.stat().st_size
    if size == 0:
        return 0.0
    pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            raise PageCacheError(f"mmap of {path} failed: {os.strerror(ctypes.get_errno())}.")
        try:
            vector = ctypes.create_string_buffer(pages)
            if _libc.mincore(address, size, vector) != 0:
                raise PageCacheError(f"mincore on {path} failed: {os.strerror(ctypes.get_errno())}.")
            resident = sum(byte & 1 for byte in vector.raw)
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)
    return resident / pages


def cached_fraction_of(paths: Iterable[Path]) -> float:
    """Return the cached fraction of the bytes of all PATHS together."""
    cached = total = 0
    for path in paths:
        size = path.stat().st_size
        cached += cached_fraction(path) * size
        total += size
    return cached / total if total else 0.0


def warm_pages(paths: Iterable[Path]) -> None:
    """Read every byte of PATHS once, so that they are in the page cache."""
    for path in paths:
        with open(path, "rb", buffering=0) as file:
            while file.read(READ_CHUNK_BYTES):
                pass


def read_bandwidth(path: Path, sample_bytes: int = DEFAULT_BANDWIDTH_SAMPLE_BYTES) -> tuple[float, bool]:
    """Measure sequential read bandwidth on PATH's disk in bytes per second; return it and whether O_DIRECT was used.

    It reads up to SAMPLE_BYTES from the start of PATH in 1 MiB reads,
    with O_DIRECT where the file system allows it (the buffer is page
    aligned, as O_DIRECT needs), else after dropping the file's pages.
    """
    direct = True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        direct = False
        drop_file_pages(path)
        fd = os.open(path, os.O_RDONLY)
    buffer = mmap.mmap(-1, READ_CHUNK_BYTES)
    try:
        started = time.perf_counter()
        total = _read_into(fd, buffer, sample_bytes)
        elapsed_s = time.perf_counter() - started
    finally:
        buffer.close()
        os.close(fd)
    if total == 0:
        raise PageCacheError(f"{path} is empty; cannot measure read bandwidth on it.")
    return total / elapsed_s, direct


def _read_into(fd: int, buffer: mmap.mmap, limit_bytes: int) -> int:
    total = 0
    while total < limit_bytes:
        count = os.readv(fd, [buffer])
        if count == 0:
            break
        total += count
    return total
