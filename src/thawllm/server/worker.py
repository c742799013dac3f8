"""The engine thread: one llama context runs one generation at a time, the others wait.

Every engine call goes through one single-thread executor, so the engine is
never touched by two threads. The executor's own queue is the request queue;
admission bounds it to max_queue waiting requests besides the running one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from thawllm.server.errors import QueueFull, ServiceUnavailable

T = TypeVar("T")


class EngineWorker:
    """The single thread that runs engine calls, with counts of queued and running jobs."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thaw-engine")
        self._lock = threading.Lock()
        self._queued = 0
        self._running = 0

    @property
    def queue_depth(self) -> int:
        return self._queued

    @property
    def in_flight(self) -> int:
        return self._running

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._queued == 0 and self._running == 0

    def submit(self, job: Callable[[], None], max_queue: int) -> Future:
        """Queue JOB behind the running one; raise QueueFull if MAX_QUEUE jobs already wait."""
        with self._lock:
            if self._queued + self._running > max_queue:
                raise QueueFull(max_queue)
            self._queued += 1
        return self._enqueue(job)

    def call(self, function: Callable[[], T], timeout_s: float) -> T:
        """Run FUNCTION on the engine thread, outside admission, and wait for its result."""
        with self._lock:
            self._queued += 1
        return self._enqueue(function).result(timeout=timeout_s)

    def _enqueue(self, job: Callable[[], T]) -> Future:
        try:
            return self._executor.submit(self._run, job)
        except RuntimeError as exc:
            # The executor raises RuntimeError once shutdown() has run.
            with self._lock:
                self._queued -= 1
            raise ServiceUnavailable("The server is shutting down.", code="shutting_down") from exc

    def _run(self, job: Callable[[], T]) -> T:
        with self._lock:
            self._queued -= 1
            self._running += 1
        try:
            return job()
        finally:
            with self._lock:
                self._running -= 1

    def shutdown(self) -> None:
        """Stop taking jobs and drop the queued ones; a running job finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
