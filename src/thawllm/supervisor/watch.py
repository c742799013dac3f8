"""Keep supervised instances in the foreground until a signal or their exit."""

from __future__ import annotations

import logging
import select
import signal
import time

from thawllm.supervisor.handle import InstanceHandle

logger = logging.getLogger("thaw.supervisor")

POLL_INTERVAL_S = 0.5


class SignalQueue:
    """Record SIGINT and SIGTERM; the supervising loop acts on them, the handlers only queue."""

    def __init__(self):
        self.received: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)


def supervise(handles: list[InstanceHandle], signals: SignalQueue) -> int:
    """Wait until a signal arrives or every instance has exited, then stop them all."""
    running = list(handles)
    while running and not signals.received:
        select.select([], [], [], POLL_INTERVAL_S)
        for handle in list(running):
            if handle.alive():
                continue
            running.remove(handle)
            log = logger.error if handle.returncode not in (0, None) else logger.warning
            log("%s [pid %d] exited with status %s.", handle.label, handle.pid, handle.returncode)

    if signals.received:
        logger.info("Received %s; stopping %d instance(s).",
                    signal.Signals(signals.received[0]).name, len(running))
    stop_all(handles)
    return 0 if signals.received else 1


def stop_all(handles: list[InstanceHandle]) -> None:
    if not handles:
        return
    started = time.perf_counter()
    for handle in handles:
        handle.stop()
    logger.info("Stopped %d instance(s) in %.2f s.", len(handles), time.perf_counter() - started)
