"""The official openai Python client against a real `thaw serve` process."""

from __future__ import annotations

import openai
import pytest

MODEL_ID = "SmolLM2-135M-Instruct.Q4_1.gguf"
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(serve_factory):
    server = serve_factory("--ctx-size", "512")
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120.0)
    yield client
    client.close()


def test_models_list(client):
    assert [model.id for model in client.models.list()] == [MODEL_ID]


def test_chat_completion(client):
    completion = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=0)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 10
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_chat_completion_stream(client):
    whole = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion(client):
    completion = client.completions.create(model=MODEL_ID, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert completion.choices[0].text.startswith(" 5, 6")
    assert completion.usage.completion_tokens == 6


def test_completion_stream(client):
    stream = client.completions.create(model=MODEL_ID, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0,
                                       stream=True)
    text = "".join(chunk.choices[0].text for chunk in stream)
    assert text.startswith(" 5, 6")


def test_client_sees_bad_request(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=4, n=2)
    assert "'n'" in str(raised.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
