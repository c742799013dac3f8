"""Scale from zero, scale out under a burst, and back to zero when idle, with each starter."""

from __future__ import annotations

import threading
import time

import httpx

COMPLETION = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
BURST_JOIN_TIMEOUT_S = 300.0


def burst(gateway, count: int) -> list[httpx.Response]:
    """Send COUNT completions at the same moment, one client per thread; return the responses."""
    responses: list[httpx.Response | BaseException] = [None] * count
    barrier = threading.Barrier(count)

    def send(index: int) -> None:
        with gateway.client() as client:
            barrier.wait(timeout=30)
            try:
                responses[index] = client.post("/v1/completions", json=COMPLETION)
            except httpx.HTTPError as exc:
                responses[index] = exc

    threads = [threading.Thread(target=send, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BURST_JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "requests of the burst still hang"
    return responses


class InstanceCounter:
    """Sample the gateway's instance list in a thread and keep the largest count seen."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def __enter__(self) -> "InstanceCounter":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.largest = max(self.largest, len(self.gateway.status()["instances"]))


def test_scale_from_zero_and_back(start_gateway, starter):
    gateway = start_gateway("--idle-timeout", "3", "--max-instances", "2", starter=starter)
    assert gateway.instance_pids() == []
    assert gateway.ready_count() == 0

    with gateway.client() as client:
        response = client.post("/v1/completions", json=COMPLETION)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "text_completion"

    metrics = gateway.metrics()
    assert metrics[f'thaw_gateway_instance_starts_total{{starter="{starter}"}}'] == 1
    assert metrics[f'thaw_gateway_instance_start_seconds_count{{starter="{starter}"}}'] == 1
    assert metrics['thaw_gateway_requests_total{code="200"}'] == 1
    pids = gateway.instance_pids()
    assert len(pids) == 1

    gateway.wait_for(lambda: gateway.instance_pids() == [], "the idle instance to stop", timeout_s=60)
    assert gateway.ready_count() == 0
    assert not gateway.process_alive(pids[0])
    assert gateway.metrics()['thaw_gateway_instance_exits_total{reason="idle"}'] == 1
    assert "Scaled to 0 instances after 3 s idle" in gateway.log()


def test_burst_from_zero_stays_within_max(start_gateway, starter):
    gateway = start_gateway("--idle-timeout", "60", "--max-instances", "3", starter=starter)

    with InstanceCounter(gateway) as counter:
        responses = burst(gateway, 20)

    failed = [response for response in responses if not isinstance(response, httpx.Response)
              or response.status_code != 200]
    assert failed == [], [getattr(response, "text", response) for response in failed]
    starts = gateway.metrics()[f'thaw_gateway_instance_starts_total{{starter="{starter}"}}']
    assert 1 < starts <= 3
    assert 1 < counter.largest <= 3
    assert "Scaling to 2 instances" in gateway.log()


def test_ten_cycles_of_idle_then_burst(start_gateway, starter):
    gateway = start_gateway("--idle-timeout", "1", "--max-instances", "2", starter=starter)

    for cycle in range(10):
        gateway.wait_for(lambda: gateway.instance_pids() == [], f"zero instances before burst {cycle}")
        responses = burst(gateway, 3)
        statuses = [getattr(response, "status_code", repr(response)) for response in responses]
        assert statuses == [200, 200, 200], f"burst {cycle}: {statuses}"

    metrics = gateway.metrics()
    assert metrics['thaw_gateway_requests_total{code="200"}'] == 30
    assert metrics[f'thaw_gateway_instance_starts_total{{starter="{starter}"}}'] >= 10
    assert f'thaw_gateway_instance_start_failures_total{{starter="{starter}"}}' not in metrics


def test_min_instances_kept_warm(start_gateway, starter):
    gateway = start_gateway("--min-instances", "1", "--idle-timeout", "1", "--max-instances", "2",
                            starter=starter)

    gateway.wait_for(lambda: gateway.ready_count() == 1, "the minimum instance to start")
    responses = burst(gateway, 2)
    assert [response.status_code for response in responses] == [200, 200]

    # A surplus instance started for the burst stops; one instance stays past the idle timeout.
    gateway.wait_for(lambda: [item["state"] for item in gateway.status()["instances"]] == ["ready"],
                     "scaling back to one ready instance")
    pid, = gateway.instance_pids()
    time.sleep(2.5)
    assert gateway.instance_pids() == [pid]
    assert gateway.ready_count() == 1
