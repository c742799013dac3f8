"""Cold starts: a new service process that loads the model itself."""

from __future__ import annotations

import time

from thawllm.engine.base import EngineSettings
from thawllm.instance import control
from thawllm.instance.options import engine_arguments
from thawllm.supervisor.handle import InstanceHandle

# Loading a 7B model from a cold page cache can take minutes on a slow disk.
LOAD_TIMEOUT_S = 900.0
SERVE_TIMEOUT_S = 60.0


def start_cold(engine: EngineSettings, imports: list[str], settings: dict, label: str) -> tuple[InstanceHandle, float]:
    """Start a service process, wait until it serves with SETTINGS; return it and the seconds it took."""
    started = time.perf_counter()
    handle = InstanceHandle.spawn(engine_arguments(engine, imports), label, new_pid_namespace=False)
    try:
        handle.wait_event(control.PARKED, LOAD_TIMEOUT_S)
        handle.serve(settings, SERVE_TIMEOUT_S)
    except BaseException:
        # Also on Ctrl-C or SIGTERM, so that no half-started instance outlives us.
        handle.kill()
        raise
    return handle, time.perf_counter() - started
