"""The gateway's own responses as raw ASGI messages. Errors have OpenAI's JSON shape."""

from __future__ import annotations

import json

from starlette.types import Send

JSON_TYPE = b"application/json"


def error_body(message: str, code: str, error_type: str = "server_error") -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


async def send_bytes(send: Send, status: int, body: bytes, content_type: bytes,
                     headers: list[tuple[bytes, bytes]] = ()) -> None:
    all_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, value, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send_bytes(send, status, json.dumps(value).encode(), JSON_TYPE, headers)


async def send_error(send: Send, status: int, message: str, code: str, *, error_type: str = "server_error",
                     retry_after_s: int | None = None) -> None:
    headers = [] if retry_after_s is None else [(b"retry-after", str(retry_after_s).encode())]
    await send_json(send, status, error_body(message, code, error_type), headers)


def sse_error_event(message: str, code: str) -> bytes:
    """Encode an error as a server-sent event, for a stream whose status line has already been sent."""
    return b"data: " + json.dumps(error_body(message, code)).encode() + b"\n\n"
