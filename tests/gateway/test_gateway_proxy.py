"""What the gateway forwards and what it handles itself, through one cold-start gateway."""

from __future__ import annotations

import json

import httpx
import pytest

COUNTING = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 200, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def gateway(shared_gateway):
    with shared_gateway.client() as client:
        response = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
    assert response.status_code == 200, response.text
    return shared_gateway


@pytest.fixture
def client(gateway):
    with gateway.client() as client:
        yield client


@pytest.fixture
def direct(gateway):
    """A client for the gateway's one instance, bypassing the gateway."""
    port, = [item["port"] for item in gateway.status()["instances"]]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        yield client


def test_models_listing_same_as_instance(client, direct):
    through = client.get("/v1/models")

    assert through.status_code == 200
    assert through.json() == direct.get("/v1/models").json()
    assert through.headers["content-type"] == "application/json"


def test_query_string_forwarded(client, direct):
    params = {"prompt": "SpaceX", "max_tokens": 4, "temperature": 0}

    through = client.get("/predict", params=params)

    assert through.status_code == 200, through.text
    assert through.json()["result"] == direct.get("/predict", params=params).json()["result"]


def test_instance_errors_passed_through(client):
    missing = client.get("/v1/no-such-route")
    wrong_method = client.delete("/v1/models")
    bad_json = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"


def test_stream_events_arrive_while_generating(gateway, client):
    with client.stream("POST", "/v1/completions", json=COUNTING) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        # The first event is here while the instance still generates the rest.
        in_flight_after_first = gateway.status()["in_flight_requests"]
        rest = [line for line in lines if line.startswith("data:")]

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert json.loads(first.removeprefix("data: "))["object"] == "text_completion"
    assert in_flight_after_first == 1
    assert rest[-1] == "data: [DONE]"
    assert len(rest) > 10


def test_oversized_body_rejected_at_gateway(client):
    response = client.post("/v1/completions", content=b"x" * ((1 << 20) + 1024),
                           headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_own_endpoints(gateway, client):
    health = client.get("/health")
    status = client.get("/gateway/status")
    metrics = client.get("/metrics")
    wrong_method = client.post("/health")

    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert status.json()["starter"] == "cold"
    assert status.json()["max_instances"] == 1
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE thaw_gateway_instance_start_seconds histogram" in metrics.text
    assert wrong_method.status_code == 405


def test_api_key_checked_before_any_start(start_gateway):
    gateway = start_gateway(api_key="test-key")
    body = {"prompt": "Hi", "max_tokens": 1}

    with httpx.Client(base_url=gateway.base_url, timeout=120) as anonymous:
        refused = anonymous.post("/v1/completions", json=body)
        refused_status = anonymous.get("/gateway/status")
        health = anonymous.get("/health")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert refused_status.status_code == 401
    assert health.status_code == 200
    assert 'thaw_gateway_instance_starts_total{starter="cold"}' not in gateway.metrics()

    with gateway.client() as client:
        assert client.post("/v1/completions", json=body).status_code == 200
