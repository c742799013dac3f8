"""Server-sent events: a generation streamed as `data: {json}` lines, ended by `data: [DONE]`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from thawllm.server.dispatch import RunningGeneration
from thawllm.server.errors import APIError, ClientDisconnected, InternalError, encode_json
from thawllm.server.openai_payloads import ResponseShape

logger = logging.getLogger("thaw.server")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def server_sent_event(payload: dict) -> bytes:
    return b"data: " + encode_json(payload) + b"\n\n"


def event_stream_response(running: RunningGeneration, shape: ResponseShape) -> StreamingResponse:
    """Stream RUNNING, whose prompt was accepted, as OpenAI chunks; the stream owns it from here."""
    return StreamingResponse(stream_chunks(running, shape), media_type="text/event-stream", headers=SSE_HEADERS)


async def stream_chunks(running: RunningGeneration, shape: ResponseShape) -> AsyncIterator[bytes]:
    try:
        for chunk in shape.opening_chunks():
            yield server_sent_event(chunk)
        async for piece in running.pieces():
            if piece.text:
                yield server_sent_event(shape.chunk(piece.text, None))
            if piece.finish_reason is not None:
                yield server_sent_event(shape.chunk(None, piece.finish_reason))
        if shape.include_usage:
            yield server_sent_event(shape.usage_chunk(running.prompt_tokens, running.completion_tokens))
        yield DONE
    except ClientDisconnected:
        logger.debug("Client left during stream %s.", shape.id)
    except APIError as exc:
        # The status line has gone out already, so the error travels as an event, as OpenAI's do.
        logger.warning("Stream %s failed: %s", shape.id, exc.message)
        yield server_sent_event(exc.to_dict())
    except Exception:
        logger.exception("Stream %s failed unexpectedly.", shape.id)
        yield server_sent_event(InternalError("Generation failed; the error is in the server log.").to_dict())
    finally:
        running.stop()
