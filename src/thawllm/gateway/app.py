"""The gateway's ASGI app: its own few endpoints, and every other path forwarded to an instance.

The gateway handles GET /health, GET /metrics and GET /gateway/status
itself, so these paths hide the instances' own /health and /metrics. The
instances' metrics are not forwarded, because any one instance would show
only its share; /gateway/status lists each instance's loopback port, where
a local scraper can read them.
"""

from __future__ import annotations

import logging

from starlette.types import Receive, Scope, Send

from thawllm.gateway import metrics as metrics_format
from thawllm.gateway.metrics import GatewayMetrics
from thawllm.gateway.pool import InstancePool
from thawllm.gateway.proxy import Forwarder
from thawllm.gateway.responses import send_bytes, send_error, send_json
from thawllm.server.auth import check_authorization
from thawllm.server.errors import AuthenticationFailed

logger = logging.getLogger("thaw.gateway")

HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
STATUS_PATH = "/gateway/status"


class GatewayApp:
    """Routes requests to the gateway's endpoints or to the forwarder."""

    def __init__(self, pool: InstancePool, forwarder: Forwarder, metrics: GatewayMetrics,
                 api_key: str | None, source: str):
        self.pool = pool
        self.forwarder = forwarder
        self.metrics = metrics
        self.api_key = api_key
        self.source = source
        self.accepting = True
        self._own_routes = {HEALTH_PATH: self.health, METRICS_PATH: self.prometheus_metrics,
                            STATUS_PATH: self.status}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = self._own_routes.get(scope["path"])
        if scope["path"] == HEALTH_PATH:
            await self._own(route, scope, send)
            return
        if not await self._authorized(scope, send):
            return
        if route is not None:
            await self._own(route, scope, send)
        else:
            await self.forwarder(scope, receive, send)

    async def _own(self, route, scope: Scope, send: Send) -> None:
        if scope["method"] != "GET":
            await send_error(send, 405, f"{scope['path']} accepts GET only, not {scope['method']}.",
                             "method_not_allowed", error_type="invalid_request_error")
            self.metrics.count_request(405)
            return
        await route(send)

    async def _authorized(self, scope: Scope, send: Send) -> bool:
        """Check the API key here too, so that a request without it never starts an instance."""
        if self.api_key is None:
            return True
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        try:
            check_authorization(header, self.api_key)
        except AuthenticationFailed as exc:
            await send_error(send, 401, exc.message, exc.code, error_type=exc.error_type)
            self.metrics.count_request(401)
            return False
        return True

    async def health(self, send: Send) -> None:
        """200 while the gateway accepts requests, 503 once it shuts down; no API key is needed."""
        gauges = self.pool.gauges()
        status = "ok" if self.accepting else "shutting_down"
        await send_json(send, 200 if self.accepting else 503,
                        {"status": status, "instances": gauges.instances_by_state})

    async def prometheus_metrics(self, send: Send) -> None:
        text = self.metrics.render(self.pool.gauges())
        await send_bytes(send, 200, text.encode(), metrics_format.CONTENT_TYPE.encode())

    async def status(self, send: Send) -> None:
        await send_json(send, 200, {"source": self.source, "accepting": self.accepting, **self.pool.status()})
