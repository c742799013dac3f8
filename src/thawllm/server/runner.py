"""Run the HTTP app with uvicorn on a socket bound beforehand, and stop it on command."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn

logger = logging.getLogger("thaw.server")

LISTEN_BACKLOG = 2048
GRACEFUL_SHUTDOWN_S = 30.0


class BindError(Exception):
    """The service could not bind its listening socket."""


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on HOST:PORT; port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # With proto 0, asyncio (3.11) leaves Nagle's algorithm on for accepted
    # connections, and each response on a kept-alive connection then waits
    # about 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(
            f"Cannot listen on {host}:{port}: {exc.strerror}. Pass another --port or --host."
        ) from exc
    return sock


def make_config(app) -> uvicorn.Config:
    """Build and load uvicorn's config, which imports its protocol classes now."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    config.load()
    return config


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]):
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_started()


class ServingSession:
    """Serve one bound socket until a signal or stop() ends it.

    Stopping closes the listener first, then lets in-flight requests finish,
    so a stopped session leaves no socket open behind it.
    """

    def __init__(self, config: uvicorn.Config, sock: socket.socket, on_started: Callable[[], None]):
        self.config = config
        self.sock = sock
        self.server = _Server(config, on_started)
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.server.should_exit = True

    async def serve(self, on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None) -> str:
        """Serve until stopped; return the stop reason ("signal" if uvicorn caught one)."""
        if on_loop is not None:
            on_loop(asyncio.get_running_loop())
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            self.sock.close()
        return self.stop_reason or "signal"
