"""`thaw serve` without supervision: bind first, return 503 while the model loads, then serve."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from thawllm.engine import EngineError, EngineSettings
from thawllm.instance.boot import load_logged
from thawllm.server.app import build_app
from thawllm.server.runner import ServingSession, bind_socket, make_config
from thawllm.server.settings import ServerSettings

logger = logging.getLogger("thaw.instance")


def serve_directly(engine_settings: EngineSettings, settings: ServerSettings) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    sock = bind_socket(settings.host, settings.port)
    app = build_app(settings)
    host, port = sock.getsockname()[:2]
    session = ServingSession(
        make_config(app), sock,
        lambda: logger.info("Listening on http://%s:%d [pid %d].", host, port, os.getpid()),
    )
    failures: list[EngineError] = []

    def load() -> None:
        try:
            app.state.service.attach_engine(load_logged(engine_settings))
        except EngineError as exc:
            logger.error("%s", exc)
            failures.append(exc)
            session.stop("load failed")

    def start_loading(loop: asyncio.AbstractEventLoop) -> None:
        threading.Thread(target=load, name="model-loader", daemon=True).start()

    asyncio.run(session.serve(on_loop=start_loading))
    return 1 if failures else 0
