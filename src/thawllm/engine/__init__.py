"""The inference engine behind the server, behind a small interface of thaw's own."""

from thawllm.engine.base import Engine, EngineError, EngineSettings, GenerationParams, Piece

__all__ = ["Engine", "EngineError", "EngineSettings", "GenerationParams", "Piece", "load_engine"]


def load_engine(settings: EngineSettings) -> Engine:
    """Load the model that SETTINGS name with llama-cpp-python."""
    from thawllm.engine.llama import LlamaEngine

    return LlamaEngine.load(settings)
