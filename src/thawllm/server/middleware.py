"""ASGI middleware: count and log each request, and turn unexpected exceptions into 500 JSON."""

from __future__ import annotations

import logging
import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thawllm.server.errors import ClientDisconnected, InternalError, error_response

logger = logging.getLogger("thaw.server")

UNMATCHED_ENDPOINT = "unmatched"


def endpoint_label(scope: Scope) -> str:
    """Name the route that SCOPE matches, so that metric labels stay few whatever paths clients send."""
    for route in scope["app"].routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return route.path
    return UNMATCHED_ENDPOINT


class RequestMetricsMiddleware:
    """Count each HTTP request by endpoint and status, and log it at DEBUG."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = ClientDisconnected.status_code

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            scope["app"].state.service.metrics.count_request(endpoint_label(scope), status)
            logger.debug("%s %s -> %d in %.1f ms", scope["method"], scope["path"], status,
                         (time.perf_counter() - started) * 1000)


class InternalErrorMiddleware:
    """Turn an unexpected exception into a 500 JSON error and log its traceback."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False

        async def send_and_track(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_track)
        except Exception:
            logger.exception("Request %s %s failed.", scope["method"], scope["path"])
            if not response_started:
                error = InternalError("The server failed on this request; the error is in its log.")
                await error_response(error)(scope, receive, send)
