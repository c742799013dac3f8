"""Read the few GGUF metadata values that size a model's context memory.

Only the metadata header is read, key by key, and reading stops as soon as
every needed value is known, so this takes milliseconds even for large files.
The layout follows the GGUF specification in the ggml repository
(docs/gguf.md): magic, version, tensor count, metadata count, then typed
key-value pairs, little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"
MAX_STRING_BYTES = 1 << 24

# GGUF value type -> struct format of one scalar value.
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                  10: "<Q", 11: "<q", 12: "<d"}
TYPE_STRING = 8
TYPE_ARRAY = 9


class ModelShapeError(Exception):
    """The GGUF metadata could not be read or lacks a needed value."""


@dataclass(frozen=True)
class ModelShape:
    """The dimensions that decide the size of the KV cache and the logits."""

    layers: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    vocab_size: int

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """Bytes of K and V cache per token over all layers (f16 values by default)."""
        head_dim = self.embedding_length // self.head_count
        return 2 * self.layers * self.head_count_kv * head_dim * bytes_per_value


def read_model_shape(path: Path) -> ModelShape:
    try:
        with open(path, "rb") as file:
            values = _read_metadata(file)
    except (OSError, struct.error, UnicodeDecodeError) as exc:
        raise ModelShapeError(f"Cannot read the GGUF metadata of {path}: {exc}") from exc
    return _shape_from(values, path)


def _read_metadata(file: BinaryIO) -> dict:
    if file.read(4) != GGUF_MAGIC:
        raise ModelShapeError(f"{file.name} is not a GGUF file")
    _version, _tensor_count, kv_count = struct.unpack("<IQQ", file.read(20))
    values: dict = {}
    for _ in range(kv_count):
        key = _read_string(file)
        value_type = _read(file, "<I")
        if key == "tokenizer.ggml.tokens" and value_type == TYPE_ARRAY:
            # The token list is long; its length is all that is needed.
            _item_type, count = struct.unpack("<IQ", file.read(12))
            values[key] = count
            if _has_everything(values):
                break
            _skip_items(file, _item_type, count)
            continue
        values[key] = _read_value(file, value_type)
        if _has_everything(values):
            break
    return values


def _has_everything(values: dict) -> bool:
    architecture = values.get("general.architecture")
    if architecture is None:
        return False
    needed = ("block_count", "embedding_length", "attention.head_count")
    has_vocab = f"{architecture}.vocab_size" in values or "tokenizer.ggml.tokens" in values
    return has_vocab and all(f"{architecture}.{name}" in values for name in needed)


def _shape_from(values: dict, path: Path) -> ModelShape:
    architecture = values.get("general.architecture")
    try:
        head_count = int(values[f"{architecture}.attention.head_count"])
        return ModelShape(
            layers=int(values[f"{architecture}.block_count"]),
            embedding_length=int(values[f"{architecture}.embedding_length"]),
            head_count=head_count,
            head_count_kv=int(values.get(f"{architecture}.attention.head_count_kv", head_count)),
            vocab_size=int(values.get(f"{architecture}.vocab_size") or values["tokenizer.ggml.tokens"]),
        )
    except (KeyError, TypeError) as exc:
        raise ModelShapeError(f"The GGUF metadata of {path} lacks {exc} for architecture {architecture!r}") from exc


def _read(file: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, file.read(size))[0]


def _read_string(file: BinaryIO) -> str:
    length = _read(file, "<Q")
    if length > MAX_STRING_BYTES:
        raise ModelShapeError(f"GGUF string of {length} bytes is implausibly long")
    return file.read(length).decode("utf-8")


def _read_value(file: BinaryIO, value_type: int):
    if value_type == TYPE_STRING:
        return _read_string(file)
    if value_type == TYPE_ARRAY:
        item_type, count = struct.unpack("<IQ", file.read(12))
        _skip_items(file, item_type, count)
        return None
    if value_type not in SCALAR_FORMATS:
        raise ModelShapeError(f"unknown GGUF value type {value_type}")
    return _read(file, SCALAR_FORMATS[value_type])


def _skip_items(file: BinaryIO, item_type: int, count: int) -> None:
    if item_type in SCALAR_FORMATS:
        file.seek(struct.calcsize(SCALAR_FORMATS[item_type]) * count, 1)
        return
    for _ in range(count):
        _read_value(file, item_type)
