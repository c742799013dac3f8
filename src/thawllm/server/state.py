"""The state of one service process: settings, the engine once loaded, the engine thread, metrics.

Nothing here reads the settings at build time, because a restored process gets
its host, port, API key and queue size only after the restore.
"""

from __future__ import annotations

import asyncio
import logging
import random

from starlette.types import Receive

from thawllm.engine.base import Engine, EngineError, GenerationParams
from thawllm.server.dispatch import EventChannel, RunningGeneration
from thawllm.server.errors import ModelLoading
from thawllm.server.generation import CompletionRequest, Failed, Generation
from thawllm.server.metrics import Gauges, Metrics
from thawllm.server.settings import ServerSettings
from thawllm.server.worker import EngineWorker

logger = logging.getLogger("thaw.server")

WARM_UP_TIMEOUT_S = 120.0
ENGINE_CALL_TIMEOUT_S = 60.0
DRAIN_POLL_INTERVAL_S = 0.01

_WARM_UP_PARAMS = GenerationParams(max_tokens=4, temperature=0.0)
WARM_UP_REQUESTS = (
    CompletionRequest(_WARM_UP_PARAMS, messages=[{"role": "user", "content": "Hello"}]),
    # For a model without a chat template, whose chat request fails.
    CompletionRequest(_WARM_UP_PARAMS, prompt="Hello"),
)


class ServiceState:
    """The state that the routes share, stored in app.state.service."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.engine: Engine | None = None
        self.metrics = Metrics()
        self.worker = EngineWorker()
        # The event loop keeps only weak references to tasks, so the disconnect watchers live here.
        self._watchers: set[asyncio.Task] = set()

    def apply_settings(self, settings: ServerSettings) -> None:
        self.settings = settings

    def attach_engine(self, engine: Engine) -> None:
        """Start serving model requests with ENGINE; until then they get 503."""
        self.engine = engine

    def require_engine(self) -> Engine:
        if self.engine is None:
            raise ModelLoading()
        return self.engine

    @property
    def model_id(self) -> str:
        return self.settings.model_alias or self.require_engine().model_name

    def gauges(self) -> Gauges:
        return Gauges(
            queue_depth=self.worker.queue_depth,
            in_flight=self.worker.in_flight,
            model_loaded=self.engine is not None,
            model_load_s=self.engine.load_seconds if self.engine is not None else None,
        )

    def start_generation(self, request: CompletionRequest, receive: Receive) -> RunningGeneration:
        """Queue REQUEST on the engine thread; cancel it if the client behind RECEIVE leaves."""
        engine = self.require_engine()
        channel = EventChannel(asyncio.get_running_loop())
        generation = Generation(request, engine, channel.put, self.metrics)
        channel.on_loop_closed = generation.cancel
        future = self.worker.submit(generation.run, self.settings.max_queue)
        running = RunningGeneration.watch(generation, channel, future, receive)
        self._watchers.add(running.watcher)
        running.watcher.add_done_callback(self._watchers.discard)
        return running

    def warm_up(self, timeout_s: float = WARM_UP_TIMEOUT_S) -> None:
        """Run one short generation the way a request does, then drop its state; blocks."""
        engine = self.require_engine()
        for request in WARM_UP_REQUESTS:
            events = []
            # A separate Metrics object keeps the warm-up out of the served counters.
            generation = Generation(request, engine, events.append, Metrics())
            self.worker.call(generation.run, timeout_s)
            failure = next((event for event in events if isinstance(event, Failed)), None)
            if failure is None:
                break
            logger.debug("Warm-up request failed: %s", failure.error.message)
        else:
            raise EngineError(f"Warm-up generation failed: {failure.error.message}")
        self.release_scratch(timeout_s)

    def release_scratch(self, timeout_s: float = ENGINE_CALL_TIMEOUT_S) -> None:
        """Drop the engine's cached evaluation state, on the engine thread."""
        self.worker.call(self.require_engine().release_scratch, timeout_s)

    def reset_after_restore(self) -> None:
        """Restart uptime and counters, and draw new random seeds, in a restored process."""
        random.seed()
        self.metrics.reset()
        if self.engine is not None:
            self.worker.call(self.engine.reseed, ENGINE_CALL_TIMEOUT_S)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is queued or generating; False if TIMEOUT_S passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.worker.idle:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(DRAIN_POLL_INTERVAL_S)
        return True

    def close(self) -> None:
        """Stop the engine thread from taking new work; queued requests get 503."""
        self.worker.shutdown()
