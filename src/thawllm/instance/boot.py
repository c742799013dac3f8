"""Build a ready service in this process: load the model, build the app, warm up."""

from __future__ import annotations

import logging
import os

from thawllm.engine import EngineSettings, load_engine
from thawllm.server.app import build_app
from thawllm.server.runner import make_config
from thawllm.server.settings import ServerSettings

from thawllm.logs import pid_note

logger = logging.getLogger("thaw.instance")


def load_logged(settings: EngineSettings):
    logger.info("Loading model %s.", settings.model_path)
    engine = load_engine(settings)
    logger.info("Model loaded in %.2f s%s.", engine.load_seconds, pid_note())
    return engine


def boot_service(settings: EngineSettings, warm_up: bool):
    """Return (app, uvicorn config) with the engine attached, everything imported."""
    app = build_app(ServerSettings())
    config = make_config(app)
    service = app.state.service
    service.attach_engine(load_logged(settings))
    if warm_up:
        service.warm_up()
    return app, config
