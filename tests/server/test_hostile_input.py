"""Requests built to cost the server much or to flood its messages get short, bounded answers."""

from __future__ import annotations

import json

import pytest

CTX_SIZE = 512
# About 600 kB: under the 1 MiB body limit, yet tens of thousands of special tokens.
SPECIAL_TOKEN_FLOOD = "<|im_start|>" * 50_000


@pytest.fixture(scope="module")
def server(serve_factory):
    return serve_factory("--ctx-size", str(CTX_SIZE))


@pytest.fixture(scope="module")
def client(server):
    with server.client() as client:
        yield client


def assert_normal_request_succeeds(client, server) -> None:
    response = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
    assert response.status_code == 200, f"{response.text}\n{server.describe()}"


def test_special_token_flood_rejected_untokenized(client, server):
    response = client.post("/v1/completions", json={"prompt": SPECIAL_TOKEN_FLOOD, "max_tokens": 2})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "prompt"
    # "at least": the count is a bound from the prompt's size, so it was never tokenized.
    assert "is at least" in error["message"]
    assert f"context of {CTX_SIZE} tokens" in error["message"]
    assert_normal_request_succeeds(client, server)


def test_chat_turn_flood_rejected_untokenized(client, server):
    messages = [{"role": "user", "content": "x"}] * 20_000
    response = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert "is at least" in error["message"]
    assert_normal_request_succeeds(client, server)


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "hi", "k" * 100_000: 1}),
    ("/v1/completions", {"prompt": "hi", "stream": True, "stream_options": {"k" * 100_000: 1}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi", "k" * 100_000: 1}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                                         "k" * 100_000: 1}]}]}),
])
def test_long_field_name_shortened_in_message(client, server, path, body):
    response = client.post(path, content=json.dumps(body))
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "unsupported_parameter"
    assert error["param"].endswith("k" * 100)
    assert "Unsupported" in error["message"]
    assert len(error["message"]) < 1000
    assert "k" * 100_000 not in server.stderr_text()
    assert_normal_request_succeeds(client, server)
