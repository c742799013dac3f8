"""Concurrent clients, clients that leave, and a full queue, against a real `thaw serve` process."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest

CTX_SIZE = 1024
# SmolLM2 continues this sequence at temperature 0 until max_tokens, so a
# request with a large max_tokens keeps the engine busy until its client leaves.
COUNTING_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"
LONG_MAX_TOKENS = 900
PROMPTS = ["The capital of France is", "Water boils at", "My favourite colour is", "Once upon a time"]
ANSWER_MAX_TOKENS = 12
IDLE_TIMEOUT_S = 120.0
THREAD_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.05


@pytest.fixture(scope="module")
def server(serve_factory):
    return serve_factory("--ctx-size", str(CTX_SIZE))


@pytest.fixture(scope="module")
def client(server):
    with server.client() as client:
        yield client


def metrics(client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {name: float(value) for name, value in re.findall(r"^(\S+) (\S+)$", text, re.MULTILINE)}


def wait_until_idle(client, server) -> dict[str, float]:
    """Poll /metrics until nothing is queued or generating; return the last metrics."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while time.monotonic() < deadline:
        values = metrics(client)
        if values["thaw_queue_depth"] == 0 and values["thaw_requests_in_flight"] == 0:
            return values
        time.sleep(POLL_INTERVAL_S)
    pytest.fail(f"The server did not become idle within {IDLE_TIMEOUT_S} s.\n{server.describe()}")


def wait_for_queue_depth(client, server, depth: int) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while time.monotonic() < deadline:
        if metrics(client)["thaw_queue_depth"] == depth:
            return
        time.sleep(POLL_INTERVAL_S)
    pytest.fail(f"Queue depth did not reach {depth} within {IDLE_TIMEOUT_S} s.\n{server.describe()}")


def short_request(prompt: str) -> dict:
    return {"prompt": prompt, "max_tokens": ANSWER_MAX_TOKENS, "temperature": 0}


def long_request(stream: bool) -> dict:
    return {"prompt": COUNTING_PROMPT, "max_tokens": LONG_MAX_TOKENS, "temperature": 0, "stream": stream}


def open_raw_request(server, path: str, body: dict) -> socket.socket:
    """Send a POST on a bare socket, so that the test decides when the client leaves."""
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head + data)
    return sock


def streamed_text(client, body: dict) -> str:
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        response.raise_for_status()
        texts = []
        for line in response.iter_lines():
            if line.startswith("data: {"):
                texts.append(json.loads(line[len("data: "):])["choices"][0]["text"])
    return "".join(texts)


def stream_then_leave(client, chunks_before_leaving: int) -> int:
    """Read a few chunks of a long stream, then close the connection; return the chunks read."""
    read = 0
    with client.stream("POST", "/v1/completions", json=long_request(stream=True)) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                read += 1
            if read == chunks_before_leaving:
                break
    return read


def run_clients(jobs: dict[str, callable]) -> dict[str, object]:
    """Run each job in its own thread, started together; return results or exceptions by name."""
    barrier = threading.Barrier(len(jobs))
    results: dict[str, object] = {}

    def run(name, job):
        barrier.wait(timeout=THREAD_TIMEOUT_S)
        try:
            results[name] = job()
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a client thread did not finish"
    return results


def test_eight_concurrent_clients(client, server):
    wait_until_idle(client, server)
    alone = {prompt: client.post("/v1/completions", json=short_request(prompt)).json()["choices"][0]["text"]
             for prompt in PROMPTS}
    before = metrics(client)

    with httpx.Client(base_url=server.base_url, timeout=120.0) as shared:
        jobs = {
            "whole 0": lambda: shared.post("/v1/completions", json=short_request(PROMPTS[0])),
            "whole 1": lambda: shared.post("/v1/completions", json=short_request(PROMPTS[1])),
            "whole 2": lambda: shared.post("/v1/completions", json=short_request(PROMPTS[2])),
            "stream 3": lambda: streamed_text(shared, short_request(PROMPTS[3])),
            "stream 0": lambda: streamed_text(shared, short_request(PROMPTS[0])),
            "leave stream a": lambda: stream_then_leave(shared, 3),
            "leave stream b": lambda: stream_then_leave(shared, 5),
            "leave whole": lambda: _post_and_leave(server, long_request(stream=False)),
        }
        results = run_clients(jobs)

    for name in ("whole 0", "whole 1", "whole 2"):
        response = results[name]
        assert isinstance(response, httpx.Response), f"{name}: {response!r}"
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == alone[PROMPTS[int(name[-1])]], name
    assert results["stream 3"] == alone[PROMPTS[3]]
    assert results["stream 0"] == alone[PROMPTS[0]]
    assert results["leave stream a"] == 3
    assert results["leave stream b"] == 5

    after = wait_until_idle(client, server)
    assert server.process.poll() is None, server.describe()
    assert 'status="500"' not in client.get("/metrics").text, server.describe()
    left = (after["thaw_generations_stopped_total"] + after["thaw_requests_dropped_total"]
            - before["thaw_generations_stopped_total"] - before["thaw_requests_dropped_total"])
    assert left == 3
    response = client.post("/v1/completions", json=short_request(PROMPTS[1]))
    assert response.json()["choices"][0]["text"] == alone[PROMPTS[1]]


def _post_and_leave(server, body: dict) -> None:
    with open_raw_request(server, "/v1/completions", body):
        # Leave before the response of LONG_MAX_TOKENS tokens can be complete.
        time.sleep(0.5)


def test_disconnect_stops_generation(client, server):
    wait_until_idle(client, server)
    before = metrics(client)
    assert stream_then_leave(client, 2) == 2
    after = wait_until_idle(client, server)
    assert after["thaw_generations_stopped_total"] == before["thaw_generations_stopped_total"] + 1
    generated = after["thaw_generated_tokens_total"] - before["thaw_generated_tokens_total"]
    assert 2 <= generated < LONG_MAX_TOKENS


def test_queued_request_of_departed_client_is_dropped(client, server):
    wait_until_idle(client, server)
    before = metrics(client)
    with httpx.Client(base_url=server.base_url, timeout=120.0) as running_client:
        with running_client.stream("POST", "/v1/completions", json=long_request(stream=True)) as running:
            # Keep the line iterator: dropping it would close the connection.
            lines = running.iter_lines()
            assert next(lines).startswith("data: ")
            with open_raw_request(server, "/v1/completions", short_request(PROMPTS[0])):
                wait_for_queue_depth(client, server, 1)
    after = wait_until_idle(client, server)
    assert after["thaw_requests_dropped_total"] == before["thaw_requests_dropped_total"] + 1
    assert after["thaw_generations_stopped_total"] == before["thaw_generations_stopped_total"] + 1


def test_full_queue_gets_503(serve_factory):
    server = serve_factory("--ctx-size", str(CTX_SIZE), "--max-queue", "1")
    with server.client() as client, server.client() as running_client:
        with running_client.stream("POST", "/v1/completions", json=long_request(stream=True)) as running:
            lines = running.iter_lines()
            assert next(lines).startswith("data: ")
            with open_raw_request(server, "/v1/completions", short_request(PROMPTS[0])):
                wait_for_queue_depth(client, server, 1)
                rejected = client.post("/v1/completions", json=short_request(PROMPTS[1]))

        assert rejected.status_code == 503, rejected.text
        assert rejected.headers["retry-after"] == "1"
        assert rejected.json()["error"]["code"] == "queue_full"
        assert "max_queue" in rejected.json()["error"]["message"]
        # A full queue is load shedding, not a failure of the server.
        assert "WARNING thaw.server: Rejected POST /v1/completions with 503" in server.stderr_text()
        assert " ERROR " not in server.stderr_text()
        wait_until_idle(client, server)
        response = client.post("/v1/completions", json=short_request(PROMPTS[1]))
        assert response.status_code == 200, response.text


def test_clients_leaving_at_once_cause_no_errors(client, server):
    wait_until_idle(client, server)
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50, "stream": True}
    for path, body in [("/v1/completions", long_request(stream=False)), ("/v1/chat/completions", chat)]:
        open_raw_request(server, path, body).close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /predict?prompt=Hello&max_tokens=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        # The body is cut short: Content-Length promises more bytes than arrive.
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"prompt\"")

    wait_until_idle(client, server)
    assert 'status="500"' not in client.get("/metrics").text, server.describe()
    response = client.post("/v1/completions", json=short_request(PROMPTS[0]))
    assert response.status_code == 200, response.text
