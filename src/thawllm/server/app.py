"""Build the Starlette app of `thaw serve`."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from thawllm.server import classic_routes, openai_routes, ops_routes
from thawllm.server.auth import APIKeyMiddleware
from thawllm.server.errors import (
    APIError,
    ClientDisconnected,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    error_response,
)
from thawllm.server.middleware import InternalErrorMiddleware, RequestMetricsMiddleware
from thawllm.server.settings import ServerSettings
from thawllm.server.state import ServiceState

logger = logging.getLogger("thaw.server")


def build_app(settings: ServerSettings) -> Starlette:
    """Build the app. app.state.service is its ServiceState, with no engine attached yet."""
    app = Starlette(
        routes=[*openai_routes.routes, *classic_routes.routes, *ops_routes.routes],
        # Outermost first: the metrics see every status, including 401 and 500.
        middleware=[
            Middleware(RequestMetricsMiddleware),
            Middleware(InternalErrorMiddleware),
            Middleware(APIKeyMiddleware),
        ],
        exception_handlers={APIError: handle_api_error, HTTPException: handle_http_exception},
    )
    app.state.service = ServiceState(settings)
    return app


async def handle_api_error(request: Request, exc: APIError) -> Response:
    if isinstance(exc, ClientDisconnected):
        logger.debug("Client left %s %s before the response.", request.method, request.url.path)
    elif exc.status_code >= 500 and not isinstance(exc, ServiceUnavailable):
        logger.error("%s %s failed with %d: %s", request.method, request.url.path, exc.status_code, exc.message)
    else:
        logger.warning("Rejected %s %s with %d: %s", request.method, request.url.path, exc.status_code, exc.message)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    """Return Starlette's routing errors (404, 405) as JSON errors of the API's shape."""
    method, path = request.method, request.url.path
    if exc.status_code == 404:
        error: APIError = NotFound(f"No route for {method} {path}. Routes: {_route_list(request)}.")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(f"Method {method} is not allowed on {path}. Use {allowed}.",
                                 headers=dict(exc.headers or {}))
    else:
        error = APIError(exc.detail, headers=dict(exc.headers or {}))
        error.status_code = exc.status_code
    return await handle_api_error(request, error)


def _route_list(request: Request) -> str:
    described = []
    for route in request.app.routes:
        methods = "/".join(sorted(route.methods - {"HEAD"}))
        described.append(f"{methods} {route.path_format}")
    return ", ".join(described)
