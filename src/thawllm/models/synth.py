"""Synthetic llama-architecture GGUF models: real shapes, random Q4_0 weights.

They cost what a real model of the same shape costs to load, map, snapshot
and run, but they are noise: their text means nothing. Each file is written
one tensor at a time, so memory stays within a few times the largest tensor
(74 MB for the 7b shape) rather than the size of the file. A seed makes the
bytes the same on every machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thawllm.models.vocab import SyntheticVocab, build_vocab

logger = logging.getLogger("thaw.models")

MODELS_DIR_ENV = "THAW_MODELS_DIR"
DEFAULT_MODELS_DIR = Path("~/.cache/thaw/models")
# Part of the file name, so that a changed generator never reuses an old file.
GENERATOR_VERSION = 1
DEFAULT_SEED = 20230
ROPE_FREQ_BASE = 10000.0
RMS_NORM_EPS = 1e-5

# Q4_0 stores blocks of 32 weights: a float16 scale, then 16 bytes of 4-bit
# values, each weight being (nibble - 8) * scale.
Q4_0_BLOCK_WEIGHTS = 32
Q4_0_BLOCK_BYTES = 18
# Standard deviation of a uniform nibble minus 8 (values -8..7).
Q4_0_NIBBLE_STD = 4.61

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthShape:
    """The dimensions of a llama-architecture model."""

    name: str
    layers: int
    embedding: int
    heads: int
    kv_heads: int
    feed_forward: int
    vocab_size: int
    context: int
    description: str

    @property
    def head_dim(self) -> int:
        return self.embedding // self.heads

    def tensor_specs(self) -> list[tuple[str, tuple[int, ...]]]:
        """Return (name, numpy shape) of every tensor, in file order; rows are output features."""
        kv_width = self.kv_heads * self.head_dim
        specs = [("token_embd.weight", (self.vocab_size, self.embedding))]
        for layer in range(self.layers):
            block = f"blk.{layer}"
            specs += [
                (f"{block}.attn_norm.weight", (self.embedding,)),
                (f"{block}.attn_q.weight", (self.embedding, self.embedding)),
                (f"{block}.attn_k.weight", (kv_width, self.embedding)),
                (f"{block}.attn_v.weight", (kv_width, self.embedding)),
                (f"{block}.attn_output.weight", (self.embedding, self.embedding)),
                (f"{block}.ffn_norm.weight", (self.embedding,)),
                (f"{block}.ffn_gate.weight", (self.feed_forward, self.embedding)),
                (f"{block}.ffn_up.weight", (self.feed_forward, self.embedding)),
                (f"{block}.ffn_down.weight", (self.embedding, self.feed_forward)),
            ]
        specs += [("output_norm.weight", (self.embedding,)), ("output.weight", (self.vocab_size, self.embedding))]
        return specs


SHAPES = {
    "1b": SynthShape("1b", layers=22, embedding=2048, heads=32, kv_heads=4, feed_forward=5632,
                     vocab_size=32000, context=2048,
                     description="22 layers of 2048, the TinyLlama-1.1B shape (0.6 GB)"),
    "7b": SynthShape("7b", layers=32, embedding=4096, heads=32, kv_heads=32, feed_forward=11008,
                     vocab_size=32000, context=4096,
                     description="32 layers of 4096, the Llama-2-7B shape (3.8 GB)"),
}
# Small enough for tests to write in a second; not offered in the command's help.
HIDDEN_SHAPES = {
    "tiny": SynthShape("tiny", layers=2, embedding=256, heads=4, kv_heads=2, feed_forward=512,
                       vocab_size=32000, context=512, description="2 layers of 256, for tests"),
}


class SynthError(Exception):
    """A synthetic model could not be generated; the message tells what to do."""


def find_shape(name: str) -> SynthShape:
    shape = SHAPES.get(name) or HIDDEN_SHAPES.get(name)
    if shape is None:
        raise SynthError(f"Unknown synthetic model shape {name!r}. Choose one of: {', '.join(SHAPES)}.")
    return shape


def models_dir() -> Path:
    """Return $THAW_MODELS_DIR, or ~/.cache/thaw/models."""
    configured = os.environ.get(MODELS_DIR_ENV)
    return Path(configured).expanduser() if configured else DEFAULT_MODELS_DIR.expanduser()


def default_path(shape: SynthShape) -> Path:
    return models_dir() / f"synthetic-llama-{shape.name}-q4_0-v{GENERATOR_VERSION}.gguf"


def ensure_synthetic_model(shape: SynthShape, path: Path | None = None, progress: Progress | None = None) -> Path:
    """Return the path of SHAPE's synthetic model, generating it first unless it exists.

    A file at the path is complete, because files are written under a
    temporary name and renamed at the end.
    """
    path = (path or default_path(shape)).expanduser().absolute()
    if path.is_file():
        logger.info("Reusing synthetic model %s.", path)
        return path
    write_synthetic_model(shape, path, progress=progress)
    return path


def write_synthetic_model(shape: SynthShape, path: Path, seed: int = DEFAULT_SEED,
                          progress: Progress | None = None) -> None:
    """Write SHAPE with random Q4_0 weights to PATH, replacing it only when complete."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthError(f"Cannot create the directory {path.parent}: {exc.strerror}. "
                         f"Pass another --output or set {MODELS_DIR_ENV}.") from exc
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    logger.info("Writing synthetic model %s (%s) to %s.", shape.name, shape.description, path)
    try:
        _write_gguf(shape, partial, seed, progress)
        os.replace(partial, path)
    except OSError as exc:
        raise SynthError(f"Cannot write the synthetic model {path}: {exc.strerror}. "
                         "Check the free disk space and the directory's permissions.") from exc
    finally:
        partial.unlink(missing_ok=True)
    logger.info("Wrote synthetic model %s (%.2f GB).", path, path.stat().st_size / 1e9)


def _write_gguf(shape: SynthShape, path: Path, seed: int, progress: Progress | None) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    _add_metadata(writer, shape, seed)
    _add_vocab(writer, build_vocab(shape.vocab_size))
    specs = shape.tensor_specs()
    for name, numpy_shape in specs:
        _add_tensor_info(writer, name, numpy_shape)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for index, data in enumerate(_tensor_data(shape, seed)):
        writer.write_tensor_data(data)
        if progress is not None:
            progress(index + 1, len(specs))
    writer.close()


def _add_metadata(writer, shape: SynthShape, seed: int) -> None:
    import gguf

    writer.add_name(f"synthetic llama {shape.name} (random weights)")
    writer.add_description(
        f"Synthetic model with random Q4_0 weights in the shape of {shape.description}; "
        f"generated by thaw with seed {seed}. Its output is noise."
    )
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_vocab_size(shape.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocab(writer, vocab: SyntheticVocab) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    writer.add_unk_token_id(vocab.unk_id)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def _add_tensor_info(writer, name: str, numpy_shape: tuple[int, ...]) -> None:
    import gguf

    if len(numpy_shape) == 1:
        writer.add_tensor_info(name, numpy_shape, np.dtype(np.float32), numpy_shape[0] * 4)
        return
    rows, columns = numpy_shape
    byte_shape = (rows, columns // Q4_0_BLOCK_WEIGHTS * Q4_0_BLOCK_BYTES)
    writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), rows * byte_shape[1],
                           raw_dtype=gguf.GGMLQuantizationType.Q4_0)


def _tensor_data(shape: SynthShape, seed: int) -> Iterator[np.ndarray]:
    """Yield each tensor's bytes in file order, each from its own seeded generator."""
    for index, (_, numpy_shape) in enumerate(shape.tensor_specs()):
        rng = np.random.default_rng([seed, index])
        if len(numpy_shape) == 1:
            yield np.ones(numpy_shape, dtype=np.float32)
        else:
            yield random_q4_0_rows(rng, *numpy_shape)


def random_q4_0_rows(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Return ROWS x COLUMNS random weights as Q4_0 blocks, one row of bytes per output feature.

    The scales give the weights a standard deviation near 1/sqrt(COLUMNS),
    so activations keep their size from layer to layer and stay finite.
    """
    if columns % Q4_0_BLOCK_WEIGHTS:
        raise SynthError(f"Q4_0 rows need a multiple of {Q4_0_BLOCK_WEIGHTS} weights, not {columns}.")
    blocks = columns // Q4_0_BLOCK_WEIGHTS
    target_std = 1.0 / np.sqrt(columns)
    scales = rng.uniform(0.75, 1.25, size=(rows, blocks)) * (target_std / Q4_0_NIBBLE_STD)

    data = np.empty((rows, blocks, Q4_0_BLOCK_BYTES), dtype=np.uint8)
    data[:, :, :2] = scales.astype("<f2").view(np.uint8).reshape(rows, blocks, 2)
    data[:, :, 2:] = np.frombuffer(rng.bytes(rows * blocks * 16), dtype=np.uint8).reshape(rows, blocks, 16)
    return data.reshape(rows, blocks * Q4_0_BLOCK_BYTES)
