"""`thaw models synth`: synthetic GGUF files that llama.cpp loads and runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from thawllm.engine import EngineSettings, GenerationParams, load_engine
from thawllm.models import synth
from thawllm.models.vocab import BYTE, CONTROL, NORMAL, UNKNOWN, WORD_START, build_vocab

THAW = [sys.executable, "-m", "thawllm.cli"]
COMMAND_TIMEOUT_S = 120.0
TINY = synth.find_shape("tiny")


def run_synth(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*THAW, "models", "synth", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "tiny.gguf"
    completed = run_synth("tiny", "-o", str(path))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(path)
    return path


def test_tiny_model_generates_tokens(tiny_model):
    engine = load_engine(EngineSettings(tiny_model, ctx_size=256, threads=1))
    prompt = engine.tokenize("The quick brown fox")
    pieces = list(engine.stream(prompt, GenerationParams(max_tokens=8, temperature=0.0, seed=1)))
    assert 1 <= len(pieces) - 1 <= 8
    assert pieces[-1].finish_reason in ("length", "stop")


def test_tiny_model_is_deterministic(tiny_model, tmp_path):
    again = tmp_path / "again.gguf"
    synth.write_synthetic_model(TINY, again)
    assert sha256(again) == sha256(tiny_model)


def test_tiny_model_metadata_says_synthetic(tiny_model):
    import gguf

    reader = gguf.GGUFReader(tiny_model)
    name_field = reader.fields["general.name"]
    name = bytes(name_field.parts[name_field.data[0]]).decode()
    assert "synthetic" in name
    assert len(reader.tensors) == len(TINY.tensor_specs())


def test_tiny_model_weights_are_q4_0(tiny_model):
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(tiny_model)
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    query = tensors["blk.0.attn_q.weight"]
    assert query.tensor_type == gguf.GGMLQuantizationType.Q4_0
    weights = dequantize(query.data, query.tensor_type)
    assert weights.shape == (TINY.embedding, TINY.embedding)
    assert np.isfinite(weights).all()
    expected_std = 1 / np.sqrt(TINY.embedding)
    assert expected_std * 0.8 < weights.std() < expected_std * 1.2


def test_tokenizer_merges_text_pieces(tiny_model):
    engine = load_engine(EngineSettings(tiny_model, ctx_size=256, threads=1))
    text = "hello world and more"
    tokens = engine.tokenize(text, add_special=False)
    assert 0 < len(tokens) < len(text.encode())


def test_synth_reuses_existing_file(tmp_path):
    env = {**os.environ, synth.MODELS_DIR_ENV: str(tmp_path)}
    first = run_synth("tiny", env=env)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path.parent == tmp_path
    modified = path.stat().st_mtime_ns

    second = run_synth("tiny", env=env)
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip()) == path
    assert path.stat().st_mtime_ns == modified
    assert "Reusing" in second.stderr


def test_synth_force_rewrites(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF not really")
    completed = run_synth("tiny", "-o", str(path), "--force")
    assert completed.returncode == 0, completed.stderr
    assert path.stat().st_size > 1_000_000


def test_synth_rejects_unknown_shape(tmp_path):
    completed = run_synth("3b", "-o", str(tmp_path / "x.gguf"))
    assert completed.returncode == 2
    assert "'3b'" in completed.stderr
    assert "1b, 7b" in completed.stderr
    assert list(tmp_path.iterdir()) == []


def test_synth_reports_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    completed = run_synth("tiny", "-o", str(blocker / "model.gguf"))
    assert completed.returncode == 2
    assert str(blocker) in completed.stderr


def test_help_hides_test_shape():
    completed = subprocess.run([*THAW, "models", "synth", "--help"], capture_output=True, text=True,
                               timeout=COMMAND_TIMEOUT_S)
    assert "7b" in completed.stdout
    assert "tiny" not in completed.stdout


@pytest.mark.parametrize("shape_name, file_bytes", [("1b", 619_761_792), ("7b", 3_791_947_136)])
def test_public_shapes_have_expected_size(shape_name, file_bytes):
    shape = synth.find_shape(shape_name)
    weights = sum(int(np.prod(dims)) for _, dims in shape.tensor_specs() if len(dims) == 2)
    norms = sum(dims[0] for _, dims in shape.tensor_specs() if len(dims) == 1)
    tensor_bytes = weights // synth.Q4_0_BLOCK_WEIGHTS * synth.Q4_0_BLOCK_BYTES + norms * 4
    # The rest is the header, the vocabulary and alignment padding.
    assert 0 < file_bytes - tensor_bytes < 2_000_000


def test_vocab_layout():
    vocab = build_vocab(32000)
    assert len(vocab.tokens) == len(set(vocab.tokens)) == 32000
    assert vocab.tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert vocab.token_types[:3] == [UNKNOWN, CONTROL, CONTROL]
    assert vocab.tokens[3] == "<0x00>"
    assert vocab.tokens[258] == "<0xFF>"
    assert set(vocab.token_types[3:259]) == {BYTE}
    assert set(vocab.token_types[259:]) == {NORMAL}
    assert WORD_START + "the" in vocab.tokens
    assert vocab.scores[259] > vocab.scores[-1]


def test_vocab_rejects_too_small_size():
    with pytest.raises(ValueError, match="more than 259 tokens, not 100"):
        build_vocab(100)
