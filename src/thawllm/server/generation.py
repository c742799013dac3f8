"""One completion request's run on the engine thread: encode the prompt, fit it, stream pieces.

Everything here runs on the single engine thread. The results travel back as
events through an emit callable, so a request and the warm-up share this path.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from thawllm.engine.base import ChatTemplateError, Engine, EngineError, GenerationParams, Piece
from thawllm.server.errors import APIError, ContextLengthExceeded, InternalError, InvalidRequest
from thawllm.server.metrics import Metrics

logger = logging.getLogger("thaw.server")


@dataclass(frozen=True)
class CompletionRequest:
    """A validated request to generate from a prompt or from chat messages."""

    params: GenerationParams
    prompt: str | None = None
    messages: list[dict] | None = None
    # False when params.max_tokens is the endpoint's default, which is shortened
    # to fit the context instead of rejected.
    max_tokens_requested: bool = True

    @property
    def prompt_param(self) -> str:
        return "prompt" if self.messages is None else "messages"

    @property
    def prompt_description(self) -> str:
        return "prompt" if self.messages is None else "prompt rendered from 'messages'"


@dataclass(frozen=True)
class Started:
    """The prompt fits and generation begins."""

    prompt_tokens: int


@dataclass(frozen=True)
class Failed:
    """The request failed before or during generation."""

    error: APIError


@dataclass(frozen=True)
class Dropped:
    """The client left while the request waited, so it never ran."""


@dataclass(frozen=True)
class Stopped:
    """The client left during generation, which stopped before its end."""


Event = Started | Piece | Failed | Dropped | Stopped


def encode_prompt(engine: Engine, request: CompletionRequest) -> list[int]:
    if request.messages is None:
        reject_unfit_text(engine, request, request.prompt)
        return engine.tokenize(request.prompt, add_special=True)
    try:
        text = engine.render_chat(request.messages)
    except ChatTemplateError as exc:
        raise InvalidRequest(f"{exc} Send a plain prompt to /v1/completions instead.", param="messages",
                             code="chat_template_error") from exc
    reject_unfit_text(engine, request, text)
    return tokenize_chat_prompt(engine, text)


def reject_unfit_text(engine: Engine, request: CompletionRequest, text: str) -> None:
    """Reject a prompt TEXT that cannot fit in the context, before it is tokenized.

    llama.cpp's special-token pass (llama-cpp-python 0.3.36) takes time quadratic
    in the number of special tokens in the text: a 1 MB prompt of them held the
    engine thread for about a minute on 2 cores, whether or not its client stayed.
    """
    floor = engine.token_count_floor(text)
    if floor >= engine.ctx_size:
        raise ContextLengthExceeded(
            f"The {request.prompt_description} is at least {floor} tokens long and does not fit in the context "
            f"of {engine.ctx_size} tokens, which the prompt and the completion share. Shorten it, or restart "
            "the server with a larger --ctx-size.",
            param=request.prompt_param,
        )


def tokenize_chat_prompt(engine: Engine, text: str) -> list[int]:
    """Tokenize a rendered chat prompt, adding BOS only if the template did not write it already."""
    plain = engine.tokenize(text, add_special=False)
    with_special = engine.tokenize(text, add_special=True)
    added = len(with_special) - len(plain)
    if added > 0 and with_special[added:] == plain and plain[:added] == with_special[:added]:
        return plain
    return with_special


def fit_to_context(request: CompletionRequest, prompt_tokens: int, ctx_size: int) -> GenerationParams:
    """Check that the prompt and max_tokens fit in CTX_SIZE; shorten a default max_tokens to fit."""
    prompt = request.prompt_description
    if prompt_tokens >= ctx_size:
        raise ContextLengthExceeded(
            f"The {prompt} is {prompt_tokens} tokens long and does not fit in the context of {ctx_size} tokens, "
            "which the prompt and the completion share. Shorten it, or restart the server with a larger --ctx-size.",
            param=request.prompt_param,
        )
    room = ctx_size - prompt_tokens
    max_tokens = request.params.max_tokens
    if max_tokens > room and request.max_tokens_requested:
        raise ContextLengthExceeded(
            f"The {prompt} ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the context "
            f"of {ctx_size} tokens. Send max_tokens of at most {room}.",
            param="max_tokens",
        )
    return dataclasses.replace(request.params, max_tokens=min(max_tokens, room))


class Generation:
    """One request on the engine thread; its events go to EMIT, which must not block."""

    def __init__(self, request: CompletionRequest, engine: Engine, emit: Callable[[Event], None],
                 metrics: Metrics):
        self.request = request
        self._engine = engine
        self._emit = emit
        self._metrics = metrics
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Ask the generation to stop; it checks between tokens. Safe from any thread."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def run(self) -> None:
        """Generate, emitting events; the last event is a final Piece, Failed, Dropped or Stopped."""
        if self.cancelled:
            self._metrics.count_dropped()
            self._emit(Dropped())
            return
        try:
            self._emit(self._generate())
        except APIError as exc:
            self._emit(Failed(exc))
        except EngineError as exc:
            logger.error("Generation failed in the engine: %s", exc)
            self._emit(Failed(InternalError(f"The engine failed: {exc}")))
        except Exception as exc:
            logger.exception("Generation failed unexpectedly.")
            self._emit(Failed(InternalError(f"Generation failed: {type(exc).__name__}. See the server log.")))

    def _generate(self) -> Piece | Stopped:
        """Stream the pieces but the last, and return the last one (or Stopped)."""
        tokens = encode_prompt(self._engine, self.request)
        params = fit_to_context(self.request, len(tokens), self._engine.ctx_size)
        self._emit(Started(len(tokens)))

        generated = 0
        pieces = self._engine.stream(tokens, params)
        try:
            for piece in pieces:
                if piece.finish_reason is not None:
                    return piece
                generated += 1
                self._emit(piece)
                if self.cancelled:
                    self._metrics.count_stopped()
                    return Stopped()
        finally:
            pieces.close()
            self._metrics.count_tokens(prompt=len(tokens), generated=generated)
        raise EngineError("the token stream ended without a finish reason")
