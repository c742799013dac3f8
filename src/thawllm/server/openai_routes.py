"""OpenAI-compatible routes: /v1/completions, /v1/chat/completions and /v1/models."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from thawllm.server.errors import JSONBody, ModelNotFound
from thawllm.server.openai_payloads import ChatCompletionShape, ResponseShape, TextCompletionShape, model_card
from thawllm.server.openai_requests import OpenAIRequest, parse_chat_request, parse_completion_request
from thawllm.server.state import ServiceState
from thawllm.server.streaming import event_stream_response
from thawllm.server.validation import parse_json_object, read_body, show


async def completions(request: Request) -> Response:
    service: ServiceState = request.app.state.service
    engine = service.require_engine()
    body = parse_json_object(await read_body(request, service.settings.max_body_bytes))
    parsed = parse_completion_request(body, ctx_size=engine.ctx_size, model_id=service.model_id)
    return await respond(request, parsed, TextCompletionShape(service.model_id, parsed.include_usage))


async def chat_completions(request: Request) -> Response:
    service: ServiceState = request.app.state.service
    engine = service.require_engine()
    body = parse_json_object(await read_body(request, service.settings.max_body_bytes))
    parsed = parse_chat_request(body, ctx_size=engine.ctx_size, model_id=service.model_id)
    return await respond(request, parsed, ChatCompletionShape(service.model_id, parsed.include_usage))


async def respond(request: Request, parsed: OpenAIRequest, shape: ResponseShape) -> Response:
    """Run PARSED and return one JSON body, or a stream once the prompt is accepted."""
    running = request.app.state.service.start_generation(parsed.completion, request.receive)
    if not parsed.stream:
        try:
            completion = await running.collect()
        finally:
            running.stop()
        return JSONBody(shape.body(completion))

    try:
        await running.started()
    except BaseException:
        running.stop()
        raise
    return event_stream_response(running, shape)


async def list_models(request: Request) -> Response:
    service: ServiceState = request.app.state.service
    return JSONBody({"object": "list", "data": [_served_model_card(service)]})


async def retrieve_model(request: Request) -> Response:
    service: ServiceState = request.app.state.service
    requested = request.path_params["model"]
    if requested != service.model_id:
        raise ModelNotFound(
            f"The model {show(requested)} does not exist on this server, which serves {show(service.model_id)}.",
            param="model",
        )
    return JSONBody(_served_model_card(service))


def _served_model_card(service: ServiceState) -> dict:
    engine = service.require_engine()
    return model_card(service.model_id, created=int(os.stat(engine.settings.model_path).st_mtime))


routes = [
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
