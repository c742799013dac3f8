"""The API key: `Authorization: Bearer <key>` on every route but /health."""

from __future__ import annotations

import httpx
import openai
import pytest

API_KEY = "test-key-5f1c"


@pytest.fixture(scope="module")
def server(serve_factory):
    return serve_factory("--ctx-size", "512", api_key=API_KEY)


@pytest.fixture(scope="module")
def anonymous(server):
    with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        yield client


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert API_KEY not in response.text


def test_health_needs_no_key(anonymous):
    assert anonymous.get("/health").status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/models"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/predict?prompt=hi"),
    ("GET", "/infer?prompt=hi"),
    ("GET", "/metrics"),
    ("GET", "/no/such/route"),
])
def test_missing_key_is_rejected(anonymous, method, path):
    response = anonymous.request(method, path)
    assert_unauthorized(response)
    assert "Authorization: Bearer" in response.json()["error"]["message"]


@pytest.mark.parametrize("header", [
    f"Bearer {API_KEY}x",
    f"Bearer {API_KEY[:-1]}",
    f"Basic {API_KEY}",
    "Bearer",
    API_KEY,
])
def test_wrong_authorization_is_rejected(anonymous, header):
    assert_unauthorized(anonymous.get("/v1/models", headers={"Authorization": header}))


def test_right_key_is_accepted(anonymous):
    response = anonymous.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2},
                              headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200, response.text


def test_openai_client_reports_wrong_key(server):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    client.close()


def test_key_from_environment(serve_factory):
    server = serve_factory("--ctx-size", "256", extra_env={"THAW_API_KEY": "from-env"})
    with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_key_with_trailing_newline(serve_factory):
    # A key read from a secrets file often ends with a newline, which no HTTP header can carry.
    server = serve_factory("--ctx-size", "256", extra_env={"THAW_API_KEY": " from-file\n"})
    with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer from-file"}).status_code == 200
