"""GET /predict and GET /infer, as in Flask demo apps: `?prompt=...` returns {"result": text}."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from thawllm.engine.base import GenerationParams
from thawllm.server.errors import InvalidRequest, JSONBody, UnsupportedParameter
from thawllm.server.generation import CompletionRequest
from thawllm.server.openai_requests import MAX_TEMPERATURE
from thawllm.server.state import ServiceState
from thawllm.server.validation import check_text, read_integer, read_number, show

CLASSIC_DEFAULT_MAX_TOKENS = 64
QUERY_PARAMETERS = ("prompt", "max_tokens", "temperature")
QUERY_EXAMPLES = {"max_tokens": CLASSIC_DEFAULT_MAX_TOKENS, "temperature": 0.7}


def parse_classic_query(items: list[tuple[str, str]], ctx_size: int) -> CompletionRequest:
    query = _single_values(items)
    prompt = query.get("prompt")
    if prompt is None:
        raise InvalidRequest("Missing query parameter 'prompt'. Call /predict?prompt=your+text.", param="prompt")
    if not prompt:
        raise InvalidRequest("Invalid value for 'prompt': it is empty. Send a non-empty prompt.", param="prompt")

    max_tokens = read_integer(_typed(query, "max_tokens", int, "an integer"), "max_tokens",
                              minimum=1, maximum=ctx_size)
    temperature = read_number(_typed(query, "temperature", float, "a number"), "temperature",
                              minimum=0.0, maximum=MAX_TEMPERATURE)
    given = {} if temperature is None else {"temperature": temperature}
    params = GenerationParams(max_tokens=max_tokens or CLASSIC_DEFAULT_MAX_TOKENS, **given)
    return CompletionRequest(params, prompt=check_text("prompt", prompt), max_tokens_requested=max_tokens is not None)


def _single_values(items: list[tuple[str, str]]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in items:
        if name not in QUERY_PARAMETERS:
            raise UnsupportedParameter(
                f"Unsupported query parameter: {show(name)}. Accepted: {', '.join(QUERY_PARAMETERS)}.", param=name
            )
        if name in query:
            raise InvalidRequest(f"Query parameter '{name}' is repeated. Send it once.", param=name)
        query[name] = value
    return query


def _typed(query: dict[str, str], name: str, convert: Callable[[str], object], expected: str) -> dict:
    """Convert the query value NAME for the JSON field readers, which check its range."""
    if name not in query:
        return {}
    try:
        return {name: convert(query[name])}
    except ValueError:
        raise InvalidRequest(
            f"Invalid value for '{name}': {show(query[name])} is not {expected}. Send {expected}, "
            f"for example {name}={QUERY_EXAMPLES[name]}.",
            param=name,
        ) from None


async def predict(request: Request) -> Response:
    service: ServiceState = request.app.state.service
    engine = service.require_engine()
    completion_request = parse_classic_query(request.query_params.multi_items(), engine.ctx_size)
    running = service.start_generation(completion_request, request.receive)
    try:
        completion = await running.collect()
    finally:
        running.stop()
    return JSONBody({"result": completion.text})


routes = [
    Route("/predict", predict, methods=["GET"]),
    Route("/infer", predict, methods=["GET"]),
]
