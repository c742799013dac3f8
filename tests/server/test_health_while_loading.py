"""/health of a real `thaw serve` process from its first moments: 503 while the model loads, then 200."""

from __future__ import annotations

import time

import httpx
import pytest

LOADING_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.005


def poll_health_until_ok(server) -> list[httpx.Response]:
    """Poll /health from the moment the port accepts connections until it returns 200."""
    answers: list[httpx.Response] = []
    deadline = time.monotonic() + LOADING_TIMEOUT_S
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(f"thaw serve exited while loading.\n{server.describe()}")
            try:
                answers.append(client.get("/health"))
            except httpx.TransportError:
                time.sleep(POLL_INTERVAL_S)
                continue
            if answers[-1].status_code == 200:
                return answers
            time.sleep(POLL_INTERVAL_S)
    pytest.fail(f"/health did not answer 200 within {LOADING_TIMEOUT_S} s.\n{server.describe()}")


def test_health_is_503_then_200(serve_factory):
    # The model loads in a fraction of a second, so the first responses may already be 200.
    server = serve_factory(wait=False)
    answers = poll_health_until_ok(server)

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {503, 200}
    assert statuses[-1] == 200
    assert statuses == sorted(statuses, reverse=True), "a 503 came after a 200"
    for answer in answers[:-1]:
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["status"] == "loading"
        assert answer.json()["error"]["code"] == "model_loading"
    assert answers[-1].json()["status"] == "ok"
    assert "Model loaded in" in server.stderr_text()
