import pytest

from thawllm.models.files import ModelFileError, bundled_model_path, resolve_model


def test_bundled_model_found_without_import():
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50 << 20


def test_missing_model_names_path(tmp_path):
    with pytest.raises(ModelFileError, match="not found: .*nothing.gguf"):
        resolve_model(tmp_path / "nothing.gguf")


def test_directory_rejected(tmp_path):
    with pytest.raises(ModelFileError, match="not a file"):
        resolve_model(tmp_path)


def test_non_gguf_rejected(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGML....")
    with pytest.raises(ModelFileError, match="not GGUF"):
        resolve_model(path)
