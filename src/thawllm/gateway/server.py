"""Run the gateway app with uvicorn, and stop every instance when it ends."""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from thawllm.gateway.app import GatewayApp
from thawllm.gateway.metrics import GatewayMetrics
from thawllm.gateway.pool import InstancePool
from thawllm.gateway.proxy import Forwarder, make_client
from thawllm.gateway.starters import Starter

logger = logging.getLogger("thaw.gateway")

KEEP_ALIVE_TIMEOUT_S = 5


class GatewayServer(uvicorn.Server):
    """uvicorn's server, logging the gateway's start and marking it unhealthy once it drains."""

    def __init__(self, config: uvicorn.Config, app: GatewayApp, sock: socket.socket, drain_timeout_s: float):
        super().__init__(config)
        self.gateway_app = app
        self.sock = sock
        self.drain_timeout_s = drain_timeout_s

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            host, port = self.sock.getsockname()[:2]
            logger.info("Gateway listening on http://%s:%d [pid %d].", host, port, os.getpid())

    async def shutdown(self, sockets=None) -> None:
        self.gateway_app.accepting = False
        logger.info("Shutting down: no new connections; in-flight requests have %g s to finish.",
                    self.drain_timeout_s)
        await super().shutdown(sockets)


async def run_gateway(sock: socket.socket, plan, starter: Starter, instance_settings: dict, signals) -> None:
    """Serve on SOCK until a signal stops uvicorn, then stop every instance."""
    metrics = GatewayMetrics()
    pool = InstancePool(plan.scaling, starter, instance_settings, metrics)
    async with make_client() as client:
        forwarder = Forwarder(pool, metrics, client, instance_settings["host"], instance_settings["max_body_bytes"])
        app = GatewayApp(pool, forwarder, metrics, plan.settings.api_key, plan.source.describe())
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none",
                                timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
                                timeout_graceful_shutdown=plan.settings.drain_timeout_s)
        server = GatewayServer(config, app, sock, plan.settings.drain_timeout_s)
        signals.attach(server)
        _log_plan(plan, starter)
        pool.open()
        try:
            await server.serve(sockets=[sock])
        finally:
            app.accepting = False
            await pool.close()


def _log_plan(plan, starter: Starter) -> None:
    scaling = plan.scaling
    logger.info("Scaling: %d to %d instances started by %s, target concurrency %d, idle timeout %g s, "
                "at most %d waiting requests for %g s each.", scaling.min_instances, scaling.max_instances,
                starter.name, scaling.target_concurrency, scaling.idle_timeout_s, scaling.max_queue,
                scaling.queue_timeout_s)
