"""Validate OpenAI completion and chat completion request bodies.

Every parameter is either honoured, accepted only with a value that changes
nothing (n=1, frequency_penalty=0, ...), or rejected with a 400 that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from thawllm.engine.base import GenerationParams
from thawllm.server.errors import InvalidRequest, ModelNotFound, UnsupportedParameter
from thawllm.server.generation import CompletionRequest
from thawllm.server.validation import (
    check_text,
    invalid_type,
    quote_name,
    read_boolean,
    read_integer,
    read_number,
    read_string,
    show,
)

# OpenAI's documented default for /v1/completions. Chat requests default to the
# rest of the context, as OpenAI's chat endpoint does.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
MAX_STOP_SEQUENCES = 4
MAX_TEMPERATURE = 2.0
SEED_RANGE = (-(2**63), 2**63 - 1)
# llama.cpp seeds are 32-bit and 0xFFFFFFFF means "pick a random seed", so
# request seeds are reduced modulo 2**32 - 1.
ENGINE_SEED_MODULUS = 2**32 - 1

# 'user' names the end user for OpenAI's abuse monitoring; thaw checks only its type.
COMMON_FIELDS = frozenset({"model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream",
                           "stream_options", "user"})
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt"}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens"}

# Parameters that thaw does not implement, accepted only with the values listed,
# which mean "off". A JSON null counts as absent for every parameter.
COMMON_NEUTRAL_VALUES = {
    "n": (1,),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logit_bias": ({},),
}
COMPLETION_NEUTRAL_VALUES = {**COMMON_NEUTRAL_VALUES, "echo": (False,), "best_of": (1,), "suffix": ("",)}
CHAT_NEUTRAL_VALUES = {
    **COMMON_NEUTRAL_VALUES,
    "logprobs": (False,),
    "response_format": ({"type": "text"},),
    "tools": ([],),
    "store": (False,),
}

CHAT_ROLES = ("system", "user", "assistant", "developer")
MESSAGE_FIELDS = frozenset({"role", "content", "name"})


@dataclass(frozen=True)
class OpenAIRequest:
    """A validated /v1 request: what to generate and how to send it back."""

    completion: CompletionRequest
    stream: bool
    include_usage: bool


def parse_completion_request(body: dict, *, ctx_size: int, model_id: str) -> OpenAIRequest:
    reject_unsupported(body, COMPLETION_FIELDS, COMPLETION_NEUTRAL_VALUES)
    check_model(body, model_id)
    read_string(body, "user")
    prompt = read_prompt(body)
    max_tokens = read_integer(body, "max_tokens", minimum=1, maximum=ctx_size)
    params = read_sampling(body, max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS)
    completion = CompletionRequest(params, prompt=prompt, max_tokens_requested=max_tokens is not None)
    return OpenAIRequest(completion, *read_stream(body))


def parse_chat_request(body: dict, *, ctx_size: int, model_id: str) -> OpenAIRequest:
    reject_unsupported(body, CHAT_FIELDS, CHAT_NEUTRAL_VALUES)
    check_model(body, model_id)
    read_string(body, "user")
    messages = read_messages(body)
    max_tokens = read_chat_max_tokens(body, ctx_size)
    params = read_sampling(body, max_tokens or ctx_size)
    completion = CompletionRequest(params, messages=messages, max_tokens_requested=max_tokens is not None)
    return OpenAIRequest(completion, *read_stream(body))


def reject_unsupported(body: dict, fields: frozenset[str], neutral_values: dict[str, tuple]) -> None:
    for name, value in body.items():
        if value is None or name in fields:
            continue
        if name not in neutral_values:
            accepted = ", ".join(sorted(fields | neutral_values.keys()))
            raise UnsupportedParameter(f"Unsupported parameter: {quote_name(name)}. thaw accepts: {accepted}.",
                                       param=name)
        if not _is_neutral(value, neutral_values[name]):
            accepted = " or ".join(show(neutral) for neutral in neutral_values[name])
            raise UnsupportedParameter(
                f"Unsupported value for '{name}': {show(value)}. thaw implements only {name}={accepted}; "
                f"omit '{name}' or send that value.",
                param=name,
            )


def _is_neutral(value, neutral_values: tuple) -> bool:
    # Compare types too, because True == 1 and False == 0 in Python.
    return any(type(value) is type(neutral) and value == neutral for neutral in neutral_values)


def check_model(body: dict, model_id: str) -> None:
    """Reject a 'model' other than MODEL_ID, the id that /v1/models lists."""
    model = read_string(body, "model")
    if model is not None and model != model_id:
        raise ModelNotFound(
            f"The model {show(model)} does not exist on this server, which serves {show(model_id)}. "
            "Send that id or omit 'model'.",
            param="model",
        )


def read_prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("Missing required parameter: 'prompt'. Send the prompt as a string.", param="prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequest(
                f"Invalid value for 'prompt': an array of {len(prompt)} items. thaw takes one prompt per request "
                "as a string (or an array of one string), not token ids or batches.",
                param="prompt",
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise invalid_type("prompt", prompt, "a string")
    if not prompt:
        raise InvalidRequest("Invalid value for 'prompt': it is empty. Send a non-empty string.", param="prompt")
    return check_text("prompt", prompt)


def read_chat_max_tokens(body: dict, ctx_size: int) -> int | None:
    """Read max_completion_tokens, or the older max_tokens; both must agree when both are given."""
    newer = read_integer(body, "max_completion_tokens", minimum=1, maximum=ctx_size)
    older = read_integer(body, "max_tokens", minimum=1, maximum=ctx_size)
    if newer is not None and older is not None and newer != older:
        raise InvalidRequest(
            f"'max_completion_tokens' ({newer}) and 'max_tokens' ({older}) disagree. Send only one of them.",
            param="max_tokens",
        )
    return newer if newer is not None else older


def read_sampling(body: dict, max_tokens: int) -> GenerationParams:
    """Read the sampling parameters; absent ones keep GenerationParams' defaults (llama.cpp's)."""
    given = {
        "temperature": read_number(body, "temperature", minimum=0.0, maximum=MAX_TEMPERATURE),
        "top_p": read_number(body, "top_p", minimum=0.0, maximum=1.0, minimum_exclusive=True),
        "seed": read_integer(body, "seed", minimum=SEED_RANGE[0], maximum=SEED_RANGE[1]),
    }
    if given["seed"] is not None:
        given["seed"] %= ENGINE_SEED_MODULUS
    given = {name: value for name, value in given.items() if value is not None}
    return GenerationParams(max_tokens=max_tokens, stop=read_stop(body), **given)


def read_stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    accepted = f"a non-empty string or an array of at most {MAX_STOP_SEQUENCES} non-empty strings"
    sequences = [stop] if isinstance(stop, str) else stop
    if not isinstance(sequences, list) or not all(isinstance(item, str) and item for item in sequences):
        raise InvalidRequest(f"Invalid value for 'stop': {show(stop)}. Send {accepted}.", param="stop")
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"Invalid value for 'stop': {len(sequences)} sequences. Send {accepted}.",
                             param="stop")
    return [check_text("stop", sequence) for sequence in sequences]


def read_stream(body: dict) -> tuple[bool, bool]:
    """Return (stream, include_usage)."""
    stream = bool(read_boolean(body, "stream"))
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    if not isinstance(options, dict):
        raise invalid_type("stream_options", options, 'an object such as {"include_usage": true}')
    unknown = sorted(set(options) - {"include_usage"})
    if unknown:
        raise UnsupportedParameter(
            f"Unsupported field {quote_name('stream_options.' + unknown[0])}. thaw accepts only 'include_usage'.",
            param=f"stream_options.{unknown[0]}",
        )
    include_usage = read_boolean(options, "include_usage")
    return stream, bool(include_usage)


def read_messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'. Send an array of objects with 'role' and 'content'.",
            param="messages",
        )
    if not isinstance(messages, list):
        raise invalid_type("messages", messages, "an array of objects with 'role' and 'content'")
    if not messages:
        raise InvalidRequest("Invalid value for 'messages': the array is empty. Send at least one message.",
                             param="messages")
    return [read_message(index, message) for index, message in enumerate(messages)]


def read_message(index: int, message) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_type(where, message, "an object with 'role' and 'content'")
    for name, value in message.items():
        if name not in MESSAGE_FIELDS and value is not None:
            raise UnsupportedParameter(
                f"Unsupported field {quote_name(f'{where}.{name}')}. "
                "thaw accepts 'role', 'content' and 'name' in a message.",
                param=f"{where}.{name}",
            )

    role = message.get("role")
    if role not in CHAT_ROLES:
        accepted = ", ".join(CHAT_ROLES)
        raise InvalidRequest(f"Invalid value for '{where}.role': {show(role)}. Send one of: {accepted}.",
                             param=f"{where}.role")
    # OpenAI introduced "developer" as the new name of "system"; chat templates know "system".
    rendered = {"role": "system" if role == "developer" else role,
                "content": read_content(f"{where}.content", message.get("content"))}
    name = read_string(message, "name")
    if name is not None:
        rendered["name"] = check_text(f"{where}.name", name)
    return rendered


def read_content(where: str, content) -> str:
    """Return the text of a message's content: a string, or an array of text parts joined by newlines."""
    if isinstance(content, str):
        return check_text(where, content)
    if not isinstance(content, list):
        raise invalid_type(where, content, 'a string or an array of {"type": "text", "text": ...} parts')
    return "\n".join(read_text_part(f"{where}[{index}]", part) for index, part in enumerate(content))


def read_text_part(where: str, part) -> str:
    if not isinstance(part, dict):
        raise invalid_type(where, part, 'an object {"type": "text", "text": ...}')
    if part.get("type") != "text":
        raise UnsupportedParameter(
            f"Unsupported content part type at '{where}.type': {show(part.get('type'))}. "
            "thaw serves a text model and accepts only parts of type \"text\".",
            param=f"{where}.type",
        )
    unknown = sorted(set(part) - {"type", "text"})
    if unknown:
        raise UnsupportedParameter(f"Unsupported field {quote_name(f'{where}.{unknown[0]}')} in a text part.",
                                   param=f"{where}.{unknown[0]}")
    text = part.get("text")
    if not isinstance(text, str):
        raise invalid_type(f"{where}.text", text, "a string")
    return check_text(f"{where}.text", text)
