"""Malformed requests get a 4xx OpenAI-shaped JSON error, and the next normal request still succeeds."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

CTX_SIZE = 512
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1.gguf"
USER_HI = [{"role": "user", "content": "Hi"}]
LONG_TEXT = "word " * (CTX_SIZE + 100)


@dataclass(frozen=True)
class BadRequest:
    """One malformed request and the error it must get."""

    case: str
    path: str
    status: int
    param: str | None
    message_parts: tuple[str, ...]
    method: str = "POST"
    body: object = None
    raw: bytes | None = None
    query: dict | list | None = None
    code: str | None = None
    headers: dict = field(default_factory=dict)


def completion(case, body, param, *parts, status=400, code=None):
    return BadRequest(case, "/v1/completions", status, param, parts, body=body, code=code)


def chat(case, body, param, *parts, status=400, code=None):
    return BadRequest(case, "/v1/chat/completions", status, param, parts, body=body, code=code)


def raw(case, content, *parts, path="/v1/completions"):
    return BadRequest(case, path, 400, None, parts, raw=content)


def classic(case, query, param, *parts, status=400):
    return BadRequest(case, "/predict", status, param, parts, method="GET", query=query)


CASES = [
    raw("invalid json", b'{"prompt": "hi",', "not valid JSON", "line 1"),
    raw("empty body", b"", "empty"),
    raw("blank body", b"  \n", "empty"),
    raw("array body", b"[1, 2]", "must be a JSON object", "an array"),
    raw("string body", b'"hi"', "must be a JSON object", "a string"),
    raw("null body", b"null", "must be a JSON object", "null"),
    raw("invalid utf-8", b'{"prompt": "\xff\xfe"}', "not valid UTF-8"),
    raw("nan number", b'{"prompt": "hi", "temperature": NaN}', "NaN"),
    raw("infinity number", b'{"prompt": "hi", "max_tokens": Infinity}', "Infinity"),
    raw("deep nesting", b"[" * 100_000, "nested too deeply"),
    raw("huge integer", b'{"prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}", "not valid JSON"),
    raw("chat invalid json", b"{messages: []}", "not valid JSON", path="/v1/chat/completions"),
    completion("missing prompt", {"max_tokens": 4}, "prompt", "Missing", "'prompt'"),
    completion("null prompt", {"prompt": None}, "prompt", "Missing"),
    completion("empty prompt", {"prompt": ""}, "prompt", "empty"),
    completion("integer prompt", {"prompt": 5}, "prompt", "expected a string", "an integer"),
    completion("token id prompt", {"prompt": [1, 2, 3]}, "prompt", "array of 3 items", "string"),
    completion("batch prompt", {"prompt": ["a", "b"]}, "prompt", "array of 2 items"),
    completion("surrogate prompt", {"prompt": "\ud800x"}, "prompt", "unpaired surrogate"),
    completion("boolean max_tokens", {"prompt": "hi", "max_tokens": True}, "max_tokens", "a boolean",
               f"from 1 to {CTX_SIZE}"),
    completion("zero max_tokens", {"prompt": "hi", "max_tokens": 0}, "max_tokens", "out of range",
               f"from 1 to {CTX_SIZE}"),
    completion("negative max_tokens", {"prompt": "hi", "max_tokens": -3}, "max_tokens", "-3"),
    completion("max_tokens beyond context", {"prompt": "hi", "max_tokens": CTX_SIZE + 1}, "max_tokens",
               str(CTX_SIZE + 1), f"from 1 to {CTX_SIZE}"),
    completion("fractional max_tokens", {"prompt": "hi", "max_tokens": 5.5}, "max_tokens", "a number"),
    completion("string max_tokens", {"prompt": "hi", "max_tokens": "5"}, "max_tokens", "a string"),
    completion("negative temperature", {"prompt": "hi", "temperature": -0.5}, "temperature", "-0.5",
               "from 0 to 2"),
    completion("high temperature", {"prompt": "hi", "temperature": 2.5}, "temperature", "from 0 to 2"),
    completion("string temperature", {"prompt": "hi", "temperature": "hot"}, "temperature", "a string"),
    completion("zero top_p", {"prompt": "hi", "top_p": 0}, "top_p", "greater than 0 and at most 1"),
    completion("high top_p", {"prompt": "hi", "top_p": 1.5}, "top_p", "greater than 0 and at most 1"),
    completion("string seed", {"prompt": "hi", "seed": "abc"}, "seed", "an integer"),
    completion("boolean seed", {"prompt": "hi", "seed": False}, "seed", "a boolean"),
    completion("five stops", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop", "5 sequences",
               "at most 4"),
    completion("integer stop", {"prompt": "hi", "stop": 7}, "stop", "at most 4"),
    completion("empty stop", {"prompt": "hi", "stop": [""]}, "stop", "non-empty"),
    completion("string stream", {"prompt": "hi", "stream": "yes"}, "stream", "a boolean"),
    completion("stream_options without stream", {"prompt": "hi", "stream_options": {"include_usage": True}},
               "stream_options", "only allowed"),
    completion("string include_usage", {"prompt": "hi", "stream": True, "stream_options": {"include_usage": "y"}},
               "include_usage", "a boolean"),
    completion("unknown stream option", {"prompt": "hi", "stream": True, "stream_options": {"x": 1}},
               "stream_options.x", "Unsupported"),
    completion("logprobs", {"prompt": "hi", "logprobs": 2}, "logprobs", "Unsupported parameter", "'logprobs'"),
    completion("n of two", {"prompt": "hi", "n": 2}, "n", "n=1"),
    completion("n of true", {"prompt": "hi", "n": True}, "n", "true", "n=1"),
    completion("echo", {"prompt": "hi", "echo": True}, "echo", "echo=false"),
    completion("best_of", {"prompt": "hi", "best_of": 3}, "best_of", "best_of=1"),
    completion("suffix", {"prompt": "hi", "suffix": "end"}, "suffix", "suffix"),
    completion("logit_bias", {"prompt": "hi", "logit_bias": {"50256": -100}}, "logit_bias", "logit_bias={}"),
    completion("frequency_penalty", {"prompt": "hi", "frequency_penalty": 0.5}, "frequency_penalty", "0.5"),
    completion("presence_penalty", {"prompt": "hi", "presence_penalty": 1}, "presence_penalty", "1"),
    completion("unknown parameter", {"prompt": "hi", "model_path": "/etc/passwd"}, "model_path",
               "Unsupported parameter", "'model_path'"),
    completion("unknown model", {"prompt": "hi", "model": "gpt-4"}, "model", '"gpt-4"', MODEL_ID,
               status=404, code="model_not_found"),
    completion("integer model", {"prompt": "hi", "model": 4}, "model", "expected a string"),
    completion("integer user", {"prompt": "hi", "user": 4}, "user", "expected a string"),
    completion("prompt beyond context", {"prompt": LONG_TEXT}, "prompt", "tokens long",
               f"context of {CTX_SIZE} tokens", "--ctx-size", code="context_length_exceeded"),
    completion("prompt plus max_tokens beyond context", {"prompt": "word " * 100, "max_tokens": CTX_SIZE - 10},
               "max_tokens", f"plus max_tokens ({CTX_SIZE - 10})", f"context of {CTX_SIZE} tokens", "at most",
               code="context_length_exceeded"),
    chat("missing messages", {"max_tokens": 4}, "messages", "Missing", "'messages'"),
    chat("string messages", {"messages": "Hi"}, "messages", "an array", "a string"),
    chat("empty messages", {"messages": []}, "messages", "empty"),
    chat("message not object", {"messages": ["Hi"]}, "messages[0]", "an object"),
    chat("missing role", {"messages": [{"content": "Hi"}]}, "messages[0].role", "null", "user"),
    chat("unknown role", {"messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role", '"robot"',
         "system, user, assistant, developer"),
    chat("tool role", {"messages": [*USER_HI, {"role": "tool", "content": "x"}]}, "messages[1].role", '"tool"'),
    chat("integer content", {"messages": [{"role": "user", "content": 3}]}, "messages[0].content",
         "an integer"),
    chat("missing content", {"messages": [{"role": "user"}]}, "messages[0].content", "null"),
    chat("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0].type", '"image_url"', "text"),
    chat("text part without text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0].text", "a string"),
    chat("tool_calls field", {"messages": [{"role": "assistant", "content": "x", "tool_calls": []}]},
         "messages[0].tool_calls", "Unsupported field"),
    chat("surrogate content", {"messages": [{"role": "user", "content": "\udfff"}]}, "messages[0].content",
         "unpaired surrogate"),
    chat("tools", {"messages": USER_HI, "tools": [{"type": "function"}]}, "tools", "tools=[]"),
    chat("chat logprobs", {"messages": USER_HI, "logprobs": True}, "logprobs", "logprobs=false"),
    chat("json response_format", {"messages": USER_HI, "response_format": {"type": "json_object"}},
         "response_format", "json_object"),
    chat("disagreeing max tokens", {"messages": USER_HI, "max_tokens": 4, "max_completion_tokens": 5},
         "max_tokens", "disagree"),
    chat("zero max_completion_tokens", {"messages": USER_HI, "max_completion_tokens": 0},
         "max_completion_tokens", "out of range"),
    chat("messages beyond context", {"messages": [{"role": "user", "content": LONG_TEXT}]}, "messages",
         "tokens long", f"context of {CTX_SIZE} tokens", code="context_length_exceeded"),
    chat("unknown chat model", {"messages": USER_HI, "model": "llama"}, "model", '"llama"', status=404,
         code="model_not_found"),
    classic("classic missing prompt", {}, "prompt", "Missing", "prompt="),
    classic("classic empty prompt", {"prompt": ""}, "prompt", "empty"),
    classic("classic word max_tokens", {"prompt": "hi", "max_tokens": "many"}, "max_tokens", '"many"',
            "not an integer", "Send an integer"),
    classic("classic zero max_tokens", {"prompt": "hi", "max_tokens": "0"}, "max_tokens", "out of range"),
    classic("classic nan temperature", {"prompt": "hi", "temperature": "nan"}, "temperature", "out of range"),
    classic("classic word temperature", {"prompt": "hi", "temperature": "warm"}, "temperature", "not a number"),
    classic("classic unknown parameter", {"prompt": "hi", "model": "x"}, "model", "Unsupported query parameter"),
    classic("classic repeated prompt", [("prompt", "a"), ("prompt", "b")], "prompt", "repeated"),
    classic("classic prompt beyond context", {"prompt": LONG_TEXT}, "prompt", "tokens long"),
    BadRequest("unknown route", "/v2/nothing", 404, None, ("No route", "/v2/nothing", "/v1/completions"),
               method="GET", code="not_found"),
    BadRequest("wrong method on completions", "/v1/completions", 405, None, ("GET", "POST"), method="GET",
               code="method_not_allowed"),
    BadRequest("wrong method on health", "/health", 405, None, ("POST",), body={}, code="method_not_allowed"),
    BadRequest("unknown model card", "/v1/models/other", 404, "model", ('"other"', MODEL_ID), method="GET",
               code="model_not_found"),
]


@pytest.fixture(scope="module")
def server(serve_factory):
    return serve_factory("--ctx-size", str(CTX_SIZE))


@pytest.fixture(scope="module")
def client(server):
    with server.client() as client:
        yield client


def send(client, case: BadRequest):
    if case.raw is not None:
        return client.request(case.method, case.path, content=case.raw,
                              headers={"Content-Type": "application/json"})
    if case.method == "GET":
        return client.get(case.path, params=case.query)
    return client.request(case.method, case.path, content=json.dumps(case.body))


def assert_normal_request_succeeds(client, server) -> None:
    response = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
    assert response.status_code == 200, f"{response.text}\n{server.describe()}"
    assert response.json()["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("case", CASES, ids=[case.case for case in CASES])
def test_bad_request_gets_json_error(client, server, case):
    response = send(client, case)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == case.param
    for part in case.message_parts:
        assert part in error["message"]
    if case.code is not None:
        assert error["code"] == case.code
    assert_normal_request_succeeds(client, server)


def test_method_not_allowed_lists_allowed(client):
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_oversized_body_gets_413(client, server):
    body = json.dumps({"prompt": "x" * (2 << 20)})
    response = client.post("/v1/completions", content=body)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert_normal_request_succeeds(client, server)


def test_context_error_gives_token_count(client):
    response = client.post("/v1/completions", json={"prompt": LONG_TEXT})
    message = response.json()["error"]["message"]
    token_count = int(re.search(r"is (\d+) tokens long", message).group(1))
    assert token_count > CTX_SIZE


def test_streamed_bad_request_gets_json_error(client, server):
    response = client.post("/v1/chat/completions",
                           json={"messages": [{"role": "user", "content": LONG_TEXT}], "stream": True})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert_normal_request_succeeds(client, server)


def test_replies_are_utf8_whatever_model_emits(client):
    # Byte-level BPE tokens can split a character; the server must still send valid UTF-8 JSON.
    for seed in range(3):
        response = client.post("/v1/completions", json={"prompt": "日本語の文章: 東京は", "max_tokens": 12,
                                                        "temperature": 1.5, "seed": seed})
        assert response.status_code == 200
        text = response.content.decode("utf-8")
        assert json.loads(text)["choices"][0]["text"] is not None
