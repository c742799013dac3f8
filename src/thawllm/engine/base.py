"""The engine interface: what the server needs from an inference library."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_CTX_SIZE = 2048
DEFAULT_BATCH_SIZE = 512


class EngineError(Exception):
    """The inference library failed to load a model or to evaluate tokens."""


class ChatTemplateError(EngineError):
    """The model has no chat template, or its template rejected the messages."""


@dataclass(frozen=True)
class EngineSettings:
    """Settings that load a model, recorded in snapshot manifests."""

    model_path: Path
    ctx_size: int = DEFAULT_CTX_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    # llama.cpp's CPU weight repacking: faster decoding, but slower loading,
    # and the repacked weights are anonymous memory that a snapshot must store.
    repack: bool = False
    flash_attn: bool = True

    def to_dict(self) -> dict:
        values = asdict(self)
        values["model_path"] = str(self.model_path)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "EngineSettings":
        return cls(**{**values, "model_path": Path(values["model_path"])})


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one completion request."""

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Piece:
    """Text produced by one generated token; finish_reason is set on the last piece."""

    text: str
    finish_reason: str | None = None


class Engine(abc.ABC):
    """One loaded model with one context, which runs one generation at a time."""

    settings: EngineSettings
    model_name: str
    ctx_size: int
    load_seconds: float

    @abc.abstractmethod
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Convert TEXT to token ids, with the model's BOS token if ADD_SPECIAL."""

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def token_count_floor(self, text: str) -> int:
        """Return a count that TEXT's tokens reach at least, found without tokenizing; 0 if unknown."""
        return 0

    @abc.abstractmethod
    def render_chat(self, messages: list[dict]) -> str:
        """Format chat MESSAGES as a prompt with the chat template stored in the GGUF."""

    @abc.abstractmethod
    def stream(self, prompt_tokens: list[int], params: GenerationParams) -> Iterator[Piece]:
        """Generate from PROMPT_TOKENS, yielding one piece per generated token.

        Closing the iterator stops the generation and frees the context.
        """

    @abc.abstractmethod
    def save_state(self) -> bytes:
        """Serialize the context state (KV cache and logits)."""

    @abc.abstractmethod
    def load_state(self, state: bytes) -> None:
        """Restore a context state made by save_state."""

    @abc.abstractmethod
    def reseed(self) -> None:
        """Draw a new default random seed, for example after a snapshot restore."""

    @abc.abstractmethod
    def compact(self) -> int:
        """Release memory that holds no data, before a snapshot; return the bytes released.

        The next generation after it is correct but pays for page faults.
        """

    @abc.abstractmethod
    def release_scratch(self) -> None:
        """Drop cached evaluation state so that no request data stays in the process."""
