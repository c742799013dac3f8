"""Check criu image files before a restore, for damage that criu itself does not catch.

criu 4.1.1 reports most truncated images at once, but a truncated pages-N.img
makes the restored task spin forever re-reading the end of the file. So the
page count that each pagemap-N.img promises is compared with the size of its
pages file. The image layout follows criu's images/*.proto and criu/image.c:
two 32-bit magics, then records that are a 32-bit length and a protobuf message.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

PAGE_SIZE = mmap.PAGESIZE
MAGICS_SIZE = 8
PARSED_PAGEMAPS_MAX = 64
RECORD_LENGTH = struct.Struct("<I")

# Flags of a pagemap entry (criu/include/pagemap.h).
PE_PARENT = 1 << 0
PE_PRESENT = 1 << 2

# Field numbers of pagemap_head and pagemap_entry (images/pagemap.proto).
HEAD_PAGES_ID = 1
ENTRY_NR_PAGES = 2
ENTRY_IN_PARENT = 3
ENTRY_FLAGS = 4

WIRE_VARINT, WIRE_FIXED64, WIRE_BYTES, WIRE_FIXED32 = 0, 1, 2, 5


class DamagedImage(Exception):
    """A criu image file is truncated or malformed."""


def check_pages(images_dir: Path) -> None:
    """Raise DamagedImage when a pages-N.img is shorter than its pagemap-N.img promises."""
    for pagemap in sorted(images_dir.glob("pagemap-*.img")):
        stat = pagemap.stat()
        pages_id, expected_bytes = _pages_promised(pagemap, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        pages = images_dir / f"pages-{pages_id}.img"
        actual_bytes = pages.stat().st_size if pages.exists() else 0
        if actual_bytes < expected_bytes:
            raise DamagedImage(
                f"{pages} is {actual_bytes} bytes long, but {pagemap.name} lists "
                f"{expected_bytes} bytes of pages, so the image is truncated."
            )


# Replicas restore from one snapshot many times, so each parsed pagemap is
# remembered by path and identity: a hit costs a stat, a parse a few ms.
@functools.lru_cache(maxsize=PARSED_PAGEMAPS_MAX)
def _pages_promised(pagemap: Path, inode: int, size: int, mtime_ns: int) -> tuple[int, int]:
    """Return the pages file id and the bytes that `pagemap` expects in it."""
    records = _records(pagemap)
    head = next(records, None)
    if head is None:
        raise DamagedImage(f"{pagemap} has no pagemap header record.")
    pages_id = _fields(head).get(HEAD_PAGES_ID, 0)

    expected_pages = 0
    for record in records:
        fields = _fields(record)
        flags = fields.get(ENTRY_FLAGS, PE_PRESENT)
        in_parent = fields.get(ENTRY_IN_PARENT, 0) or flags & PE_PARENT
        if flags & PE_PRESENT and not in_parent:
            expected_pages += fields.get(ENTRY_NR_PAGES, 0)
    return pages_id, expected_pages * PAGE_SIZE


def _records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    offset = MAGICS_SIZE
    while offset < len(data):
        if offset + RECORD_LENGTH.size > len(data):
            raise DamagedImage(f"{path} ends inside a record length at byte {offset}.")
        (length,) = RECORD_LENGTH.unpack_from(data, offset)
        offset += RECORD_LENGTH.size
        if offset + length > len(data):
            raise DamagedImage(f"{path} ends inside a {length}-byte record at byte {offset}.")
        yield data[offset : offset + length]
        offset += length


def _fields(message: bytes) -> dict[int, int]:
    """Decode the integer fields of a protobuf message; other wire types are skipped."""
    fields = {}
    offset = 0
    while offset < len(message):
        key, offset = _varint(message, offset)
        number, wire_type = key >> 3, key & 7
        if wire_type == WIRE_VARINT:
            fields[number], offset = _varint(message, offset)
        elif wire_type == WIRE_FIXED64:
            offset += 8
        elif wire_type == WIRE_FIXED32:
            offset += 4
        elif wire_type == WIRE_BYTES:
            length, offset = _varint(message, offset)
            offset += length
        else:
            raise DamagedImage(f"Unknown protobuf wire type {wire_type} in a pagemap record.")
    return fields


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if offset >= len(data):
            raise DamagedImage("A pagemap record ends inside a varint.")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
