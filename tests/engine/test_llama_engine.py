"""The llama-cpp-python engine with the bundled model."""

from pathlib import Path

import pytest

from thawllm.engine import EngineError, EngineSettings, GenerationParams, load_engine
from thawllm.models.files import bundled_model_path


@pytest.fixture(scope="module")
def engine():
    return load_engine(EngineSettings(bundled_model_path(), ctx_size=512))


def generate(engine, prompt: str, **params) -> tuple[str, list]:
    pieces = list(engine.stream(engine.tokenize(prompt), GenerationParams(**params)))
    return "".join(piece.text for piece in pieces), pieces


def test_greedy_generation_is_repeatable(engine):
    first, _ = generate(engine, "SpaceX", max_tokens=8, temperature=0)
    second, _ = generate(engine, "SpaceX", max_tokens=8, temperature=0)
    assert first
    assert first == second


def test_one_piece_per_token_then_final(engine):
    _, pieces = generate(engine, "Once upon a time", max_tokens=5, temperature=0)
    assert len(pieces) == 6
    assert [piece.finish_reason for piece in pieces[:-1]] == [None] * 5
    assert pieces[-1].finish_reason == "length"


def test_same_seed_same_sample(engine):
    first, _ = generate(engine, "The weather", max_tokens=8, temperature=1.0, seed=7)
    second, _ = generate(engine, "The weather", max_tokens=8, temperature=1.0, seed=7)
    assert first == second


def test_stop_sequence_ends_generation(engine):
    text, _ = generate(engine, "SpaceX", max_tokens=16, temperature=0)
    stop = text[2:4]
    cut, pieces = generate(engine, "SpaceX", max_tokens=16, temperature=0, stop=[stop])
    assert cut == text[: text.find(stop)]
    assert pieces[-1].finish_reason == "stop"


def test_chat_template_from_gguf(engine):
    prompt = engine.render_chat([{"role": "user", "content": "hi"}])
    assert "<|im_start|>user\nhi<|im_end|>" in prompt


def test_compact_keeps_answers(engine):
    before, _ = generate(engine, "SpaceX", max_tokens=8, temperature=0)
    assert engine.compact() > 0
    after, _ = generate(engine, "SpaceX", max_tokens=8, temperature=0)
    assert after == before


def test_damaged_model_raises_engine_error(tmp_path: Path):
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(bundled_model_path().read_bytes()[:1 << 20])
    with pytest.raises(EngineError, match="damaged.gguf"):
        load_engine(EngineSettings(damaged))


@pytest.mark.parametrize("text", [
    "Hello",
    "<|im_start|>user\nhi<|im_end|>\n" * 40,
    "日本語の文章 " * 200,
    " " * 4000,
    "\n\t" * 500,
    "a" * 5000,
])
def test_token_count_floor_is_a_lower_bound(engine, text):
    assert engine.token_count_floor(text) <= len(engine.tokenize(text))


def test_token_count_floor_catches_special_token_flood(engine):
    assert engine.token_count_floor("<|im_start|>" * 100_000) >= engine.ctx_size


@pytest.mark.parametrize("repack", [False, True])
def test_repack_setting_reaches_llama_cpp(repack, monkeypatch):
    import llama_cpp.llama_cpp as bindings

    seen = []
    original = bindings.llama_model_load_from_file

    def spy(path, params):
        seen.append(params.use_extra_bufts)
        return original(path, params)

    monkeypatch.setattr(bindings, "llama_model_load_from_file", spy)
    load_engine(EngineSettings(bundled_model_path(), ctx_size=256, repack=repack))
    assert seen == [repack]
