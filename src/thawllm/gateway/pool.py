"""The instances behind the gateway: routing, scaling on concurrency, and watching for exits.

Scaling follows the concurrency model of Knative's autoscaler: each
instance takes up to target_concurrency requests at once, and the pool runs
ceil(demand / target_concurrency) instances, where demand counts the
requests in flight and those waiting, within [min_instances, max_instances].
An instance idle for idle_timeout_s is stopped unless that would leave fewer
than min_instances. Everything here runs on the event loop; the blocking
starts and stops run in a thread pool.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from thawllm.gateway.instances import Instance, InstanceState, describe_exit
from thawllm.gateway.metrics import GatewayMetrics, PoolGauges
from thawllm.gateway.settings import ScalingSettings
from thawllm.gateway.starters import Starter, StartError
from thawllm.supervisor.handle import InstanceHandle

logger = logging.getLogger("thaw.gateway")

START_ATTEMPTS = 2
WATCH_INTERVAL_S = 0.1
STOP_TIMEOUT_S = 10.0
EXIT_CONFIRM_TIMEOUT_S = 1.0
EXIT_CONFIRM_INTERVAL_S = 0.01
# After a start failed START_ATTEMPTS times, wait this long before starting
# instances for --min-instances again, so that a broken source does not spin.
MINIMUM_RETRY_DELAY_S = 10.0


class NoInstanceError(Exception):
    """A request could not get an instance. The message gives the reason and goes into the 503 response."""

    code = "no_instance"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(NoInstanceError):
    code = "queue_full"


class QueueTimeout(NoInstanceError):
    code = "queue_timeout"


class StartFailed(NoInstanceError):
    code = "instance_start_failed"


class PoolClosed(NoInstanceError):
    code = "shutting_down"


class InstancePool:
    """Starts, routes to, scales and stops the instances of one starter."""

    def __init__(self, scaling: ScalingSettings, starter: Starter, server_settings: dict,
                 metrics: GatewayMetrics):
        self.scaling = scaling
        self.starter = starter
        self.server_settings = server_settings
        self.metrics = metrics
        self._instances: list[Instance] = []
        self._waiters: deque[asyncio.Future] = deque()
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._executor = ThreadPoolExecutor(max_workers=2 * scaling.max_instances + 2,
                                            thread_name_prefix="gateway-instance")
        self._watcher: asyncio.Task | None = None
        self._closing = False
        self._last_start_s = 1.0
        self._minimum_retry_at = 0.0
        self._saturation_logged = False

    # Life cycle of the pool

    def open(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self._ensure_minimum()

    async def close(self) -> None:
        """Reject waiting requests, end starts in progress, and stop every instance."""
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        self._fail_waiters(PoolClosed("The gateway is shutting down.", self.retry_after_s()))
        self.starter.abort()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

        running = [instance for instance in self._instances if instance.handle is not None]
        if running:
            started = time.monotonic()
            logger.info("Stopping %d instance(s).", len(running))
            results = await asyncio.gather(*(self._stop(instance, "shutdown") for instance in running),
                                           return_exceptions=True)
            for instance, result in zip(running, results):
                if isinstance(result, Exception):
                    logger.error("Stopping %s [pid %s] failed: %r", instance.label, instance.pid, result)
            logger.info("Stopped %d instance(s) in %.2f s.", len(running), time.monotonic() - started)
        self._executor.shutdown(wait=True)

    # Requests

    async def acquire(self) -> Instance:
        """Return an instance with a free slot, counting the request in flight on it.

        Waits while an instance starts or frees a slot. Raises a subclass of
        NoInstanceError when the queue is full, the wait times out, starts
        fail or the gateway shuts down.
        """
        if self._closing:
            raise PoolClosed("The gateway is shutting down.", self.retry_after_s())
        instance = None if self._waiters else self._pick()
        if instance is not None:
            instance.in_flight += 1
            return instance
        if len(self._waiters) >= self.scaling.max_queue:
            raise QueueFull(
                f"The gateway is busy: {len(self._waiters)} requests already wait for an instance "
                f"(--max-queue {self.scaling.max_queue}). Retry after {self.retry_after_s()} s.",
                self.retry_after_s(),
            )
        return await self._wait_for_slot()

    async def _wait_for_slot(self) -> Instance:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._scale_up()
        try:
            done, _ = await asyncio.wait({waiter}, timeout=self.scaling.queue_timeout_s)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        if not done:
            self._abandon(waiter)
            raise QueueTimeout(
                f"No instance was free within {self.scaling.queue_timeout_s:g} s (--queue-timeout); "
                f"{len(self._active())} of at most {self.scaling.max_instances} instances run. "
                f"Retry after {self.retry_after_s()} s.",
                self.retry_after_s(),
            )
        return waiter.result()

    def release(self, instance: Instance) -> None:
        """End a request on INSTANCE and hand the free slot to the next waiting request."""
        instance.in_flight -= 1
        if instance.in_flight == 0:
            instance.idle_since = time.monotonic()
        if instance.state is InstanceState.READY:
            self._dispatch()

    def check(self, instance: Instance) -> None:
        """Remove INSTANCE if its process has ended."""
        if instance.state is InstanceState.READY and instance.handle.poll() is not None:
            self._on_exit(instance)

    async def confirm_exit(self, instance: Instance) -> bool:
        """After a connection to INSTANCE failed, wait briefly for its process to end; True if it has.

        A killed process closes its sockets a moment before it can be reaped,
        so a broken connection comes first and the exit shortly after.
        """
        deadline = time.monotonic() + EXIT_CONFIRM_TIMEOUT_S
        while instance in self._instances and instance.state is InstanceState.READY:
            self.check(instance)
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(EXIT_CONFIRM_INTERVAL_S)
        return instance not in self._instances

    def suspect(self, instance: Instance) -> None:
        """Confirm in the background whether INSTANCE has exited, so no new request goes to it."""
        self._spawn_task(self.confirm_exit(instance))

    def retry_after_s(self) -> int:
        """Seconds a refused client should wait: about one instance start, at least 1."""
        return max(1, math.ceil(self._last_start_s))

    # Status

    def gauges(self) -> PoolGauges:
        by_state = {state.value: 0 for state in InstanceState}
        for instance in self._instances:
            by_state[instance.state.value] += 1
        in_flight = sum(instance.in_flight for instance in self._instances)
        return PoolGauges(by_state, len(self._waiters), in_flight, self.scaling.max_instances)

    def status(self) -> dict:
        return {
            "starter": self.starter.name,
            "instances": [instance.status() for instance in self._instances],
            "held_requests": len(self._waiters),
            "in_flight_requests": sum(instance.in_flight for instance in self._instances),
            "target_concurrency": self.scaling.target_concurrency,
            "min_instances": self.scaling.min_instances,
            "max_instances": self.scaling.max_instances,
            "idle_timeout_s": self.scaling.idle_timeout_s,
        }

    # Routing

    def _pick(self) -> Instance | None:
        """Return the busiest ready instance below the target, so that surplus ones go idle."""
        free = [instance for instance in self._instances
                if instance.state is InstanceState.READY and instance.in_flight < self.scaling.target_concurrency]
        return max(free, key=lambda instance: (instance.in_flight, -instance.number), default=None)

    def _dispatch(self) -> None:
        while self._waiters:
            instance = self._pick()
            if instance is None:
                return
            instance.in_flight += 1
            self._waiters.popleft().set_result(instance)

    def _abandon(self, waiter: asyncio.Future) -> None:
        """Forget a waiter whose request gave up, returning a slot that it was given meanwhile."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.release(waiter.result())
            return
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        waiter.cancel()

    def _fail_waiters(self, error: NoInstanceError) -> None:
        while self._waiters:
            self._waiters.popleft().set_exception(error)

    # Scaling

    def _active(self) -> list[Instance]:
        return [instance for instance in self._instances
                if instance.state in (InstanceState.STARTING, InstanceState.READY)]

    def _scale_up(self) -> None:
        if self._closing:
            return
        demand = len(self._waiters) + sum(instance.in_flight for instance in self._active())
        needed = max(self.scaling.min_instances, math.ceil(demand / self.scaling.target_concurrency))
        desired = min(needed, self.scaling.max_instances)
        active = len(self._active())
        self._log_saturation(needed > desired and active == desired)
        if desired <= active:
            return
        logger.info("Scaling to %s: %s in flight or waiting, target concurrency %d.",
                    _count(desired, "instance"), _count(demand, "request"), self.scaling.target_concurrency)
        for _ in range(desired - active):
            self._launch()

    def _log_saturation(self, saturated: bool) -> None:
        if saturated and not self._saturation_logged:
            logger.warning("All %s (--max-instances) are busy; %s waiting for a free slot.",
                           _count(self.scaling.max_instances, "instance"), _count(len(self._waiters), "request"))
        self._saturation_logged = saturated

    def _ensure_minimum(self) -> None:
        missing = self.scaling.min_instances - len(self._active())
        if self._closing or missing <= 0 or time.monotonic() < self._minimum_retry_at:
            return
        logger.info("Scaling to %s: --min-instances %d.", _count(self.scaling.min_instances, "instance"),
                    self.scaling.min_instances)
        for _ in range(missing):
            self._launch()

    def _stop_idle(self) -> None:
        surplus = len(self._active()) - self.scaling.min_instances
        if surplus <= 0 or self._waiters:
            return
        now = time.monotonic()
        idle = [instance for instance in self._instances
                if instance.state is InstanceState.READY and instance.in_flight == 0
                and now - instance.idle_since >= self.scaling.idle_timeout_s]
        for instance in sorted(idle, key=lambda instance: -instance.number)[:surplus]:
            logger.info("Stopping %s [pid %d]: idle for %g s.", instance.label, instance.pid,
                        self.scaling.idle_timeout_s)
            # Not routable from now on, although the stop itself runs later in a thread.
            instance.state = InstanceState.STOPPING
            self._spawn_task(self._stop_idle_instance(instance))

    async def _stop_idle_instance(self, instance: Instance) -> None:
        await self._stop(instance, "idle")
        if not any(other.state is InstanceState.STOPPING for other in self._instances):
            logger.info("Scaled to %s after %g s idle.", _count(len(self._active()), "instance"),
                        self.scaling.idle_timeout_s)

    # Starting and stopping instances

    def _launch(self) -> None:
        instance = Instance(next(self._numbers))
        self._instances.append(instance)
        self._spawn_task(self._start(instance))

    async def _start(self, instance: Instance) -> None:
        started = time.monotonic()
        error: Exception | None = None
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                handle = await self._run_blocking(self.starter.start, instance.label, self.server_settings)
            except StartError as exc:
                error = exc
            except Exception as exc:
                logger.exception("Starting %s raised an unexpected error.", instance.label)
                error = exc
            else:
                self._on_started(instance, handle, time.monotonic() - started)
                return
            self.metrics.count_start_failure(self.starter.name)
            logger.error("Starting %s failed (attempt %d of %d): %s", instance.label, attempt,
                         START_ATTEMPTS, error)
            if self._closing:
                break
        self._on_start_failed(instance, error)

    def _on_started(self, instance: Instance, handle: InstanceHandle, seconds: float) -> None:
        instance.handle = handle
        instance.state = InstanceState.READY
        instance.idle_since = time.monotonic()
        self._last_start_s = seconds
        self.metrics.observe_start(self.starter.name, seconds)
        logger.info("Started %s with %s in %.0f ms, serving on port %d [pid %d].", instance.label,
                    self.starter.name, seconds * 1000, handle.port, handle.pid)
        self._dispatch()

    def _on_start_failed(self, instance: Instance, error: Exception | None) -> None:
        self._instances.remove(instance)
        self._minimum_retry_at = time.monotonic() + MINIMUM_RETRY_DELAY_S
        if self._active() or not self._waiters:
            return
        logger.error("No instance runs and none could start; responding 503 to %d waiting requests.",
                     len(self._waiters))
        self._fail_waiters(StartFailed(f"No instance could be started: {error}", self.retry_after_s()))

    async def _stop(self, instance: Instance, reason: str) -> None:
        instance.state = InstanceState.STOPPING
        returncode = await self._run_blocking(instance.handle.stop, STOP_TIMEOUT_S)
        instance.handle.close()
        self._instances.remove(instance)
        self.metrics.count_exit(reason)
        logger.info("Stopped %s [pid %d] with %s.", instance.label, instance.pid, describe_exit(returncode))

    def _on_exit(self, instance: Instance) -> None:
        self._instances.remove(instance)
        instance.lost.set()
        instance.handle.close()
        self.metrics.count_exit("failed")
        logger.error("%s [pid %d] exited unexpectedly with %s; %d requests in flight on it get 502.",
                     instance.label.capitalize(), instance.pid, describe_exit(instance.handle.returncode),
                     instance.in_flight)
        self._scale_up()

    # Background work

    async def _watch(self) -> None:
        """Reap exited instances, stop idle ones and keep the minimum running, every WATCH_INTERVAL_S."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                for instance in [item for item in self._instances if item.state is InstanceState.READY]:
                    self.check(instance)
                self._stop_idle()
                self._ensure_minimum()
            except Exception:
                logger.exception("The instance watcher failed; it goes on at the next tick.")

    def _spawn_task(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run_blocking(self, function, *args):
        return asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(function, *args))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
