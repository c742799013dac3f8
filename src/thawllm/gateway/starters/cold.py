"""Cold start: a new service process that loads the model, warms up and serves."""

from __future__ import annotations

import logging
import os
import signal
import threading

from thawllm.gateway.source import Source
from thawllm.gateway.starters.base import Starter, StarterOptions, StartError
from thawllm.instance import control
from thawllm.instance.options import engine_arguments
from thawllm.supervisor.handle import InstanceError, InstanceHandle

logger = logging.getLogger("thaw.gateway")


class ColdStarter(Starter):
    """Starts `python -m thawllm.instance MODEL` and sends it the serve command once it is warm."""

    name = "cold"

    def __init__(self, source: Source, start_timeout_s: float):
        self.source = source
        self.start_timeout_s = start_timeout_s
        self._arguments = engine_arguments(source.engine, source.imports)
        self._lock = threading.Lock()
        self._starting: set[InstanceHandle] = set()

    @classmethod
    def create(cls, source: Source, options: StarterOptions) -> "ColdStarter":
        return cls(source, options.start_timeout_s)

    def start(self, label: str, server_settings: dict) -> InstanceHandle:
        try:
            handle = InstanceHandle.spawn(self._arguments, label, new_pid_namespace=False)
        except OSError as exc:
            raise StartError(f"Could not spawn the service process: {exc}") from exc
        self._track(handle, starting=True)
        try:
            handle.wait_event(control.PARKED, self.start_timeout_s)
            handle.serve(server_settings, self.start_timeout_s)
        except InstanceError as exc:
            self._track(handle, starting=False)
            handle.kill()
            raise StartError(str(exc)) from exc
        self._track(handle, starting=False)
        return handle

    def abort(self) -> None:
        # Only a signal here: the starting thread reads the end of the event pipe
        # when the process exits, then reaps it and closes the pipes itself. A handle
        # leaves the set before it is reaped, so its pid cannot have been reused.
        with self._lock:
            for handle in self._starting:
                try:
                    os.kill(handle.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _track(self, handle: InstanceHandle, starting: bool) -> None:
        with self._lock:
            if starting:
                self._starting.add(handle)
            else:
                self._starting.discard(handle)

    def describe(self) -> str:
        return f"cold starts of {self.source.engine.model_path}"
