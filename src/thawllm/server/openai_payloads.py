"""Response bodies and stream chunks in the shapes of OpenAI's completion APIs."""

from __future__ import annotations

import secrets
import time

from thawllm.server.dispatch import Completion


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ResponseShape:
    """The fields that every body and chunk of one response share."""

    id_prefix = ""
    object_name = ""
    chunk_object_name = ""

    def __init__(self, model_id: str, include_usage: bool = False):
        self.id = self.id_prefix + secrets.token_hex(12)
        self.created = int(time.time())
        self.model_id = model_id
        self.include_usage = include_usage

    def _envelope(self, object_name: str, choices: list[dict]) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model_id,
                "system_fingerprint": None, "choices": choices}

    def body(self, completion: Completion) -> dict:
        body = self._envelope(self.object_name, [self._choice(completion)])
        body["usage"] = usage(completion.prompt_tokens, completion.completion_tokens)
        return body

    def chunk(self, delta_text: str | None, finish_reason: str | None) -> dict:
        chunk = self._envelope(self.chunk_object_name, [self._chunk_choice(delta_text, finish_reason)])
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        """Build the last chunk of a stream with include_usage, which has no choices, only the usage."""
        chunk = self._envelope(self.chunk_object_name, [])
        chunk["usage"] = usage(prompt_tokens, completion_tokens)
        return chunk

    def opening_chunks(self) -> list[dict]:
        return []

    def _choice(self, completion: Completion) -> dict:
        raise NotImplementedError

    def _chunk_choice(self, delta_text: str | None, finish_reason: str | None) -> dict:
        raise NotImplementedError


class TextCompletionShape(ResponseShape):
    """POST /v1/completions."""

    id_prefix = "cmpl-"
    object_name = "text_completion"
    chunk_object_name = "text_completion"

    def _choice(self, completion: Completion) -> dict:
        return {"index": 0, "text": completion.text, "logprobs": None, "finish_reason": completion.finish_reason}

    def _chunk_choice(self, delta_text: str | None, finish_reason: str | None) -> dict:
        return {"index": 0, "text": delta_text or "", "logprobs": None, "finish_reason": finish_reason}


class ChatCompletionShape(ResponseShape):
    """POST /v1/chat/completions."""

    id_prefix = "chatcmpl-"
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"

    def opening_chunks(self) -> list[dict]:
        # OpenAI's streams announce the role in a first chunk with empty content.
        chunk = self.chunk(None, None)
        chunk["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return [chunk]

    def _choice(self, completion: Completion) -> dict:
        return {"index": 0, "message": {"role": "assistant", "content": completion.text},
                "logprobs": None, "finish_reason": completion.finish_reason}

    def _chunk_choice(self, delta_text: str | None, finish_reason: str | None) -> dict:
        delta = {} if delta_text is None else {"content": delta_text}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "thaw"}
