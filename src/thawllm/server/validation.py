"""Read a request body as a JSON object and check the types and ranges of its fields.

Each reader returns None for an absent field or a JSON null, as the OpenAI API
treats null as "not given". Errors name the field, the value and what is accepted.
"""

from __future__ import annotations

import json
import math

from starlette.requests import ClientDisconnect, Request

from thawllm.server.errors import ClientDisconnected, InvalidRequest, PayloadTooLarge

MAX_SHOWN_VALUE_CHARS = 60


def json_type_name(value) -> str:
    """Name the JSON type of VALUE with its article; bool is checked before int on purpose."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def show(value) -> str:
    """Render VALUE as JSON for an error message, shortened to a readable length."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    if len(text) > MAX_SHOWN_VALUE_CHARS:
        text = text[: MAX_SHOWN_VALUE_CHARS - 3] + "..."
    return text


def quote_name(name: str) -> str:
    """Quote a field name that a client sent, shortened like show() so that messages stay readable."""
    if len(name) > MAX_SHOWN_VALUE_CHARS:
        name = name[: MAX_SHOWN_VALUE_CHARS - 3] + "..."
    return f"'{name}'"


def invalid_type(name: str, value, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{name}': expected {expected}, got {json_type_name(value)} ({show(value)}).",
        param=name,
    )


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """Read the request body, rejecting one larger than MAX_BODY_BYTES before buffering it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(int(declared), max_body_bytes)

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _too_large(size, max_body_bytes)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientDisconnected("The client closed the connection while sending the request body.") from exc
    return b"".join(chunks)


def _too_large(size: int, max_body_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body is larger than {max_body_bytes} bytes ({size} bytes or more). Send a shorter prompt."
    )


def _reject_constant(name: str):
    raise InvalidRequest(f"Request body is not valid JSON: {name} is not a JSON number.")


def parse_json_object(body: bytes) -> dict:
    """Parse BODY as a JSON object; NaN and Infinity, which Python's json accepts, are rejected."""
    if not body.strip():
        raise InvalidRequest("Request body is empty. Send a JSON object with Content-Type: application/json.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid UTF-8: invalid byte at offset {exc.start}.") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from exc
    except RecursionError as exc:
        raise InvalidRequest("Request body is not valid JSON for this server: it is nested too deeply.") from exc
    except ValueError as exc:
        # Python refuses integers of more than 4300 digits (sys.set_int_max_str_digits).
        raise InvalidRequest(f"Request body is not valid JSON for this server: {exc}.") from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"Request body must be a JSON object, got {json_type_name(value)}.")
    return value


def check_text(name: str, text: str) -> str:
    """Reject TEXT if it contains an unpaired surrogate, which has no UTF-8 encoding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"Invalid text in '{name}': unpaired surrogate {text[exc.start]!a} at index {exc.start}. "
            "Send valid Unicode text.",
            param=name,
        ) from exc
    return text


def read_string(body: dict, name: str, *, allow_empty: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_type(name, value, "a string")
    if not allow_empty and not value:
        raise InvalidRequest(f"Invalid value for '{name}': it is empty. Send a non-empty string.", param=name)
    return check_text(name, value)


def read_boolean(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise invalid_type(name, value, "a boolean (true or false)")


def read_integer(body: dict, name: str, *, minimum: int, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(name, value, f"an integer from {minimum} to {maximum}")
    if not minimum <= value <= maximum:
        raise InvalidRequest(
            f"Invalid value for '{name}': {value} is out of range. Send an integer from {minimum} to {maximum}.",
            param=name,
        )
    return value


def read_number(body: dict, name: str, *, minimum: float, maximum: float,
                minimum_exclusive: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if minimum_exclusive:
        accepted = f"a number greater than {minimum:g} and at most {maximum:g}"
    else:
        accepted = f"a number from {minimum:g} to {maximum:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(name, value, accepted)
    too_low = value <= minimum if minimum_exclusive else value < minimum
    if too_low or value > maximum or not math.isfinite(value):
        raise InvalidRequest(f"Invalid value for '{name}': {value} is out of range. Send {accepted}.", param=name)
    return float(value)
