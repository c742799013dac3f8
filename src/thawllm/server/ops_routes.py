"""Operations routes: /health for load balancers and /metrics for Prometheus."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from thawllm.server import metrics
from thawllm.server.errors import JSONBody, ModelLoading
from thawllm.server.state import ServiceState


async def health(request: Request) -> Response:
    """Return 503 while the model loads, then 200; no API key is needed."""
    service: ServiceState = request.app.state.service
    if service.engine is None:
        loading = ModelLoading()
        return JSONBody({"status": "loading", **loading.to_dict()}, status_code=loading.status_code,
                        headers=loading.headers)
    return JSONBody({"status": "ok", "model": service.model_id})


async def prometheus_metrics(request: Request) -> Response:
    service: ServiceState = request.app.state.service
    text = service.metrics.render(service.gauges())
    return Response(text, media_type=metrics.CONTENT_TYPE)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", prometheus_metrics, methods=["GET"]),
]
