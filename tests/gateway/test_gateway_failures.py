"""Instance deaths, failed starts, a full or slow queue, and shutdown, with real processes."""

from __future__ import annotations

import json
import os
import signal
import threading

import httpx
import pytest

# A prompt that the model goes on counting from, so that a generation runs for its max_tokens.
COUNTING = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 1500, "temperature": 0}
SHORT = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
JOIN_TIMEOUT_S = 120.0


class Background:
    """One request sent from a thread; its response or error is kept."""

    def __init__(self, gateway, body: dict):
        self.result: httpx.Response | BaseException | None = None
        self._thread = threading.Thread(target=self._send, args=(gateway, body))
        self._thread.start()

    def _send(self, gateway, body: dict) -> None:
        with gateway.client() as client:
            try:
                self.result = client.post("/v1/completions", json=body)
            except httpx.HTTPError as exc:
                self.result = exc

    def response(self) -> httpx.Response:
        self._thread.join(timeout=JOIN_TIMEOUT_S)
        assert not self._thread.is_alive(), "the request still hangs"
        assert isinstance(self.result, httpx.Response), repr(self.result)
        return self.result


class HeldStream:
    """A streamed completion whose first event has arrived; it stays in flight until closed."""

    def __init__(self, gateway):
        self._client = gateway.client()
        request = self._client.build_request("POST", "/v1/completions", json={**COUNTING, "stream": True})
        self.response = self._client.send(request, stream=True)
        try:
            assert self.response.status_code == 200, self.response.read()
            self.lines = self.response.iter_lines()
            self.first = next(line for line in self.lines if line.startswith("data:"))
        except BaseException:
            self.close()
            raise

    def rest(self) -> list[str]:
        return [line for line in self.lines if line.startswith("data:")]

    def close(self) -> None:
        self.response.close()
        self._client.close()


def wait_in_flight(gateway, count: int) -> None:
    gateway.wait_for(lambda: gateway.status()["in_flight_requests"] == count, f"{count} requests in flight")


def test_killed_instance_fails_request_with_502(start_gateway, starter):
    gateway = start_gateway("--max-instances", "1", "--idle-timeout", "60", starter=starter)
    request = Background(gateway, COUNTING)
    wait_in_flight(gateway, 1)
    pid, = gateway.instance_pids()

    os.kill(pid, signal.SIGKILL)
    response = request.response()

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "instance_failed"
    assert "instance 1" in error["message"]
    with gateway.client() as client:
        assert [client.post("/v1/completions", json=SHORT).status_code for _ in range(3)] == [200] * 3
    replacement, = gateway.instance_pids()
    assert replacement != pid
    metrics = gateway.metrics()
    assert metrics['thaw_gateway_instance_exits_total{reason="failed"}'] == 1
    assert metrics['thaw_gateway_requests_total{code="502"}'] == 1
    assert "exited unexpectedly with SIGKILL" in gateway.log()


def test_killed_instance_ends_stream_with_error_event(start_gateway, starter):
    gateway = start_gateway("--max-instances", "1", "--idle-timeout", "60", starter=starter)
    stream = HeldStream(gateway)
    try:
        pid, = gateway.instance_pids()
        os.kill(pid, signal.SIGKILL)
        events = stream.rest()
    finally:
        stream.close()

    assert stream.response.status_code == 200
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "instance_failed"
    with gateway.client() as client:
        assert client.post("/v1/completions", json=SHORT).status_code == 200


def test_full_queue_answers_503_with_retry_after(start_gateway, starter):
    gateway = start_gateway("--max-instances", "1", "--max-queue", "1", starter=starter)
    stream = HeldStream(gateway)
    try:
        waiting = Background(gateway, SHORT)
        gateway.wait_for(lambda: gateway.status()["held_requests"] == 1, "one held request")
        with gateway.client() as client:
            refused = client.post("/v1/completions", json=SHORT)
    finally:
        stream.close()

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert waiting.response().status_code == 200


def test_queue_timeout_answers_503(start_gateway, starter):
    # The instance runs before the test begins, so that only the second request waits.
    gateway = start_gateway("--max-instances", "1", "--min-instances", "1", "--queue-timeout", "1",
                            starter=starter)
    gateway.wait_for(lambda: gateway.ready_count() == 1, "the minimum instance to start")
    stream = HeldStream(gateway)
    try:
        with gateway.client() as client:
            refused = client.post("/v1/completions", json=SHORT)
    finally:
        stream.close()

    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "queue_timeout"
    assert "--queue-timeout" in error["message"]
    assert "retry-after" in refused.headers


def test_client_leaving_queue_frees_its_place(start_gateway):
    gateway = start_gateway("--max-instances", "1", "--max-queue", "1")
    stream = HeldStream(gateway)
    try:
        with pytest.raises(httpx.ReadTimeout):
            with httpx.Client(base_url=gateway.base_url, timeout=1.0) as impatient:
                impatient.post("/v1/completions", json=SHORT)
        gateway.wait_for(lambda: gateway.status()["held_requests"] == 0, "the abandoned request to leave the queue")
        waiting = Background(gateway, SHORT)
        gateway.wait_for(lambda: gateway.status()["held_requests"] == 1, "the next request to wait")
    finally:
        stream.close()

    assert waiting.response().status_code == 200
    # The impatient request, and the stream closed before its end.
    assert gateway.metrics()['thaw_gateway_requests_total{code="499"}'] == 2


@pytest.fixture
def broken_model(tmp_path):
    """A file with GGUF's magic number and nothing valid after it: it passes the path check but cannot load."""
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 4096)
    return path


def test_failed_start_retried_once_then_503(start_gateway, broken_model):
    gateway = start_gateway(str(broken_model))

    with gateway.client() as client:
        response = client.post("/v1/completions", json=SHORT)

    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "instance_start_failed"
    assert "No instance could be started" in error["message"]
    assert "retry-after" in response.headers
    metrics = gateway.metrics()
    assert metrics['thaw_gateway_instance_start_failures_total{starter="cold"}'] == 2
    assert metrics['thaw_gateway_instances{state="starting"}'] == 0
    assert "attempt 2 of 2" in gateway.log()


def test_auto_starter_falls_back_to_cold_with_reason(start_gateway, broken_model):
    gateway = start_gateway(str(broken_model), starter="auto")

    assert gateway.status()["starter"] == "cold"
    assert "Starter: cold (--starter auto) because criu is unavailable" in gateway.log()


def test_sigterm_stops_every_instance(start_gateway, starter):
    gateway = start_gateway("--max-instances", "2", "--idle-timeout", "60", starter=starter)
    first, second = Background(gateway, SHORT), Background(gateway, SHORT)
    assert first.response().status_code == 200
    assert second.response().status_code == 200
    gateway.wait_for(lambda: {item["state"] for item in gateway.status()["instances"]} == {"ready"},
                     "every instance to be ready")
    pids = gateway.instance_pids()

    assert gateway.terminate() == 0, gateway.log()

    assert [pid for pid in pids if gateway.process_alive(pid)] == []
    assert f"Stopped {len(pids)} instance(s)" in gateway.log()


def test_sigterm_drains_request_in_flight(start_gateway, starter):
    gateway = start_gateway("--max-instances", "1", starter=starter)
    request = Background(gateway, {**COUNTING, "max_tokens": 64})
    wait_in_flight(gateway, 1)
    pid, = gateway.instance_pids()

    gateway.process.send_signal(signal.SIGTERM)
    response = request.response()

    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 64
    assert gateway.terminate() == 0
    assert not gateway.process_alive(pid)
