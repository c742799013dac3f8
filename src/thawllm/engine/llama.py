"""The engine on llama-cpp-python."""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import functools
import logging
import os
import random
import time
from collections.abc import Iterator

import jinja2
import llama_cpp
from llama_cpp import llama_chat_format
from llama_cpp._internals import LlamaContext

from thawllm.engine.base import (
    ChatTemplateError,
    Engine,
    EngineError,
    EngineSettings,
    GenerationParams,
    Piece,
)
from thawllm.engine.memory import drop_zero_pages, fix_mmap_threshold, new_ranges, private_anonymous_ranges
from thawllm.engine.stops import StopMatcher

logger = logging.getLogger("thaw.engine")

# llama.cpp's own defaults for the samplers that the OpenAI API does not expose.
TOP_K = 40
MIN_P = 0.05

BOUNDED_VOCAB_TYPES = (llama_cpp.LLAMA_VOCAB_TYPE_SPM, llama_cpp.LLAMA_VOCAB_TYPE_BPE)
WHITESPACE_TAKING_ATTRS = llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP | llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP
PIECE_BUFFER_BYTES = 256


@contextlib.contextmanager
def _model_params_with_repack(repack: bool):
    """Set use_extra_bufts in the model params that Llama() builds.

    llama-cpp-python 0.3.36 has no constructor argument for it, so the
    default-params factory that Llama() calls is wrapped while it loads.
    Llama() calls it through the llama_cpp.llama_cpp module, not the package.
    """
    bindings = llama_cpp.llama_cpp
    original = bindings.llama_model_default_params

    def default_params():
        params = original()
        params.use_extra_bufts = repack
        return params

    bindings.llama_model_default_params = default_params
    try:
        yield
    finally:
        bindings.llama_model_default_params = original


class LlamaEngine(Engine):
    """A GGUF model loaded with mmap into one llama.cpp context."""

    def __init__(self, llama: llama_cpp.Llama, settings: EngineSettings, load_seconds: float):
        self._llama = llama
        self._vocab = llama._model.vocab
        self._random = random.Random()
        self._chat_formatter = self._build_chat_formatter()
        self.settings = settings
        self.model_name = settings.model_path.name
        self.ctx_size = llama.n_ctx()
        self.load_seconds = load_seconds

    @classmethod
    def load(cls, settings: EngineSettings) -> "LlamaEngine":
        started = time.perf_counter()
        fix_mmap_threshold()
        try:
            with _model_params_with_repack(settings.repack):
                llama = llama_cpp.Llama(
                    model_path=str(settings.model_path),
                    n_ctx=settings.ctx_size,
                    n_batch=settings.batch_size,
                    n_ubatch=settings.batch_size,
                    n_threads=settings.threads or os.cpu_count(),
                    flash_attn=settings.flash_attn,
                    use_mmap=True,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(
                f"llama.cpp failed to load {settings.model_path}: {exc}. "
                "Check that the file is a complete GGUF model."
            ) from exc
        return cls(llama, settings, time.perf_counter() - started)

    def _build_chat_formatter(self):
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        model = self._llama._model
        eos_id, bos_id = model.token_eos(), model.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
        )

    @property
    def has_chat_template(self) -> bool:
        return self._chat_formatter is not None

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def token_count_floor(self, text: str) -> int:
        longest = self._longest_piece_bytes
        return len(text.encode("utf-8")) // longest if longest else 0

    @functools.cached_property
    def _longest_piece_bytes(self) -> int | None:
        """The maximum number of text bytes that one token represents, or None where no such bound exists.

        In BPE and SentencePiece vocabularies a token represents exactly its
        piece, except a special token marked lstrip or rstrip, which also
        absorbs the whitespace next to it. The first prompt pays for the scan:
        about 70 ms for SmolLM2's 49152 tokens on a 2-core AMD EPYC.
        """
        if llama_cpp.llama_vocab_type(self._vocab) not in BOUNDED_VOCAB_TYPES:
            return None
        buffer = ctypes.create_string_buffer(PIECE_BUFFER_BYTES)
        longest = 1
        for token in range(llama_cpp.llama_vocab_n_tokens(self._vocab)):
            if llama_cpp.llama_vocab_get_attr(self._vocab, token) & WHITESPACE_TAKING_ATTRS:
                return None
            # A negative length is the size the piece needs, when it exceeds the buffer.
            length = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, PIECE_BUFFER_BYTES, 0, True)
            longest = max(longest, abs(length))
        return longest

    def render_chat(self, messages: list[dict]) -> str:
        if self._chat_formatter is None:
            raise ChatTemplateError(f"{self.model_name} has no chat template in its GGUF metadata.")
        try:
            return self._chat_formatter(messages=messages).prompt
        except (ValueError, jinja2.TemplateError) as exc:
            # Templates reject some conversations, for example roles that do not alternate.
            raise ChatTemplateError(f"The chat template of {self.model_name} rejected the messages: {exc}") from exc

    def stream(self, prompt_tokens: list[int], params: GenerationParams) -> Iterator[Piece]:
        seed = params.seed if params.seed is not None else self._random.randrange(2**31)
        self._llama.set_seed(seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(params.stop)
        tokens = self._llama.generate(
            prompt_tokens,
            top_k=TOP_K,
            top_p=params.top_p,
            min_p=MIN_P,
            temp=params.temperature,
            repeat_penalty=1.0,
        )
        generated: list[int] = []
        finish_reason = "length"
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish_reason = "stop"
                    break
                piece = self._llama.detokenize([token], prev_tokens=prompt_tokens + generated)
                generated.append(token)
                yield Piece(matcher.feed(decoder.decode(piece)))
                if matcher.stopped:
                    finish_reason = "stop"
                    break
                if len(generated) >= params.max_tokens:
                    break
                if len(prompt_tokens) + len(generated) >= self.ctx_size:
                    break
        finally:
            tokens.close()

        tail = "" if matcher.stopped else matcher.feed(decoder.decode(b"", final=True))
        yield Piece(tail + ("" if matcher.stopped else matcher.flush()), finish_reason)

    def save_state(self) -> bytes:
        import pickle

        return pickle.dumps(self._llama.save_state())

    def load_state(self, state: bytes) -> None:
        import pickle

        self._llama.load_state(pickle.loads(state))

    def reseed(self) -> None:
        self._random.seed(os.urandom(16))

    def release_scratch(self) -> None:
        self._llama.reset()
        self._llama._ctx.kv_cache_clear()

    def compact(self) -> int:
        # A new context has a zero-filled KV cache and untouched compute
        # buffers. The memory it maps is llama.cpp's own, so no other code
        # writes it while its zero pages are dropped.
        self._llama.reset()
        self._llama._ctx.close()
        before = private_anonymous_ranges()
        context = LlamaContext(model=self._llama._model, params=self._llama.context_params, verbose=False)
        allocated = new_ranges(before, private_anonymous_ranges())
        self._llama._ctx = context
        return drop_zero_pages(allocated)
