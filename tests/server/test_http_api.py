"""The HTTP API of a real `thaw serve` process: classic routes, /v1 routes, /health and /metrics."""

from __future__ import annotations

import json
import re

import httpx
import pytest

CHAT = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0}
COUNTING_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"


@pytest.fixture(scope="module")
def server(serve_factory):
    return serve_factory("--ctx-size", "1024")


@pytest.fixture
def client(server):
    with server.client() as client:
        yield client


def read_events(response: httpx.Response) -> list:
    """Parse a server-sent event stream into JSON payloads, with "[DONE]" kept as a string."""
    events = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        data = line[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def metric_value(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name + labels)} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("path", ["/predict", "/infer"])
def test_classic_route_returns_result(client, path):
    response = client.get(path, params={"prompt": COUNTING_PROMPT, "max_tokens": 8, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["result"]
    assert body["result"].startswith(" 9, 10")


def test_classic_routes_agree_at_temperature_zero(client):
    params = {"prompt": "The sky is", "max_tokens": 6, "temperature": 0}
    predicted = client.get("/predict", params=params).json()["result"]
    inferred = client.get("/infer", params=params).json()["result"]
    assert predicted == inferred


def test_completion_body_and_usage(client):
    response = client.post("/v1/completions", json={"prompt": COUNTING_PROMPT, "max_tokens": 6, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    choice = body["choices"][0]
    assert choice["text"].startswith(" 9, 10")
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 6
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 6


def test_completion_stop_sequence(client):
    response = client.post("/v1/completions",
                           json={"prompt": COUNTING_PROMPT, "max_tokens": 20, "temperature": 0, "stop": [" 11"]})
    choice = response.json()["choices"][0]
    assert choice["text"] == " 9, 10,"
    assert choice["finish_reason"] == "stop"


def test_completion_stream_matches_whole_answer(client):
    request = {"prompt": COUNTING_PROMPT, "max_tokens": 8, "temperature": 0}
    whole = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={**request, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in chunk for chunk in chunks)


def test_chat_completion_answers(client):
    response = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 24})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"].strip()
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 24


def test_chat_accepts_max_completion_tokens(client):
    response = client.post("/v1/chat/completions", json={**CHAT, "max_completion_tokens": 2})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 2
    assert response.json()["choices"][0]["finish_reason"] == "length"


def test_chat_accepts_text_parts_and_developer_role(client):
    messages = [
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
    ]
    response = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_chat_stream_with_usage(client):
    request = {**CHAT, "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        events = read_events(response)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    chunks = events[:-2]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk["usage"] is None for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == []
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    whole = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 12}).json()
    assert text == whole["choices"][0]["message"]["content"]
    assert usage_chunk["usage"] == whole["usage"]


def test_chat_prompt_tokens_match_template(client):
    # SmolLM2's template writes <|im_start|>, its BOS token, itself; the engine must not add another.
    response = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1})
    prompt_tokens = response.json()["usage"]["prompt_tokens"]
    rendered = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    as_completion = client.post("/v1/completions", json={"prompt": rendered, "max_tokens": 1})
    assert prompt_tokens == as_completion.json()["usage"]["prompt_tokens"]


def test_seed_makes_sampling_repeatable(client):
    request = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "seed": 42}
    first = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
    second = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
    assert first == second


def test_model_may_be_named(client):
    response = client.post("/v1/completions", json={"model": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                                    "prompt": "Hi", "max_tokens": 1})
    assert response.status_code == 200, response.text


def test_models_lists_served_model(client):
    response = client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert body["data"][0]["object"] == "model"
    single = client.get("/v1/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert single.json() == body["data"][0]


def test_health_after_loading(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def test_metrics_count_requests_and_tokens(client):
    before = client.get("/metrics").text
    client.post("/v1/completions", json={"prompt": COUNTING_PROMPT, "max_tokens": 5, "temperature": 0})
    client.get("/predict", params={"prompt": "Hi", "max_tokens": 3})
    client.post("/v1/completions", json={"prompt": ""})
    response = client.get("/metrics")
    after = response.text

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    completions_200 = '{endpoint="/v1/completions",status="200"}'
    completions_400 = '{endpoint="/v1/completions",status="400"}'
    predict_200 = '{endpoint="/predict",status="200"}'
    assert metric_value(after, "thaw_requests_total", completions_200) == \
        metric_value(before, "thaw_requests_total", completions_200) + 1
    assert metric_value(after, "thaw_requests_total", completions_400) == \
        metric_value(before, "thaw_requests_total", completions_400) + 1
    assert metric_value(after, "thaw_requests_total", predict_200) == \
        metric_value(before, "thaw_requests_total", predict_200) + 1
    generated = metric_value(after, "thaw_generated_tokens_total") - metric_value(before, "thaw_generated_tokens_total")
    assert 5 <= generated <= 8
    assert metric_value(after, "thaw_queue_depth") == 0
    assert metric_value(after, "thaw_model_loaded") == 1
    assert metric_value(after, "thaw_model_load_seconds") > 0
    assert metric_value(after, "thaw_uptime_seconds") > 0
