"""ServiceState through real HTTP on an app served in this process, so the test controls its life cycle.

The app runs under uvicorn on a loopback socket in a thread. Each test attaches
the real bundled model when it needs it, and before that the service behaves
as one whose model is still loading.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading

import httpx
import pytest
from starlette.routing import Route

from thawllm.engine import EngineSettings, load_engine
from thawllm.models.files import resolve_model
from thawllm.server.app import build_app
from thawllm.server.runner import ServingSession, bind_socket, make_config
from thawllm.server.settings import ServerSettings

START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 120.0
COUNTING_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"


class ThreadServer:
    """Serve APP on a free loopback port from a thread of the test process."""

    def __init__(self, app):
        self.app = app
        self.service = app.state.service
        sock = bind_socket("127.0.0.1", 0)
        self.base_url = "http://127.0.0.1:%d" % sock.getsockname()[1]
        self._started = threading.Event()
        self._session = ServingSession(make_config(app), sock, self._started.set)
        self._thread = threading.Thread(target=self._serve, name="test-uvicorn", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _serve(self) -> None:
        asyncio.run(self._session.serve(on_loop=self._remember_loop))

    def _remember_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise RuntimeError(f"uvicorn did not start within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        self._session.stop("test finished")
        self._thread.join(START_TIMEOUT_S)

    def run(self, coroutine, timeout_s: float = REQUEST_TIMEOUT_S):
        """Run COROUTINE on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT_S, **kwargs)


@pytest.fixture(scope="module")
def engine():
    return load_engine(EngineSettings(resolve_model(None), ctx_size=512, threads=1))


@pytest.fixture
def served():
    servers = []

    def serve(settings: ServerSettings | None = None) -> ThreadServer:
        server = ThreadServer(build_app(settings or ServerSettings()))
        server.start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop()


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def test_model_routes_answer_503_until_engine_attached(served, engine):
    server = served()
    with server.client() as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.headers["retry-after"] == "1"
        assert health.json()["status"] == "loading"
        assert health.json()["error"]["code"] == "model_loading"
        for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"),
                             ("POST", "/v1/chat/completions"), ("GET", "/predict?prompt=hi")]:
            response = client.request(method, path)
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "1"
            assert "model is loading" in response.json()["error"]["message"]
        assert metric(client.get("/metrics").text, "thaw_model_loaded") == 0

        server.service.attach_engine(engine)
        assert client.get("/health").status_code == 200
        response = client.get("/predict", params={"prompt": "Hi", "max_tokens": 2})
        assert response.status_code == 200, response.text


def test_settings_applied_after_build(served, engine):
    server = served()
    server.service.attach_engine(engine)
    server.service.apply_settings(ServerSettings(api_key="later", model_alias="smol"))
    with server.client() as client:
        assert client.get("/v1/models").status_code == 401
        models = client.get("/v1/models", headers={"Authorization": "Bearer later"})
        assert [model["id"] for model in models.json()["data"]] == ["smol"]


def test_warm_up_leaves_no_counts(served, engine):
    server = served()
    server.service.attach_engine(engine)
    server.service.warm_up()
    with server.client() as client:
        text = client.get("/metrics").text
    assert metric(text, "thaw_generated_tokens_total") == 0
    assert metric(text, "thaw_prompt_tokens_total") == 0


def test_reset_after_restore_zeroes_counters(served, engine):
    server = served()
    server.service.attach_engine(engine)
    with server.client() as client:
        client.get("/predict", params={"prompt": "Hi", "max_tokens": 2})
        assert 'thaw_requests_total{endpoint="/predict",status="200"} 1' in client.get("/metrics").text
        server.service.reset_after_restore()
        text = client.get("/metrics").text
    assert "/predict" not in text
    assert metric(text, "thaw_generated_tokens_total") == 0


def test_drain_waits_for_running_request(served, engine):
    server = served()
    service = server.service
    service.attach_engine(engine)
    request = {"prompt": COUNTING_PROMPT, "max_tokens": 300, "temperature": 0, "stream": True}
    with server.client() as client, client.stream("POST", "/v1/completions", json=request) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert server.run(service.drain(0.0)) is False
        assert server.run(service.drain(REQUEST_TIMEOUT_S)) is True
        assert service.worker.idle
        assert "data: [DONE]" in list(lines)


def test_unexpected_exception_gives_500_json(served, engine, caplog):
    async def broken(request):
        raise RuntimeError("deliberate failure for the test")

    server = served()
    server.app.router.routes.append(Route("/broken", broken))
    with caplog.at_level(logging.ERROR, logger="thaw.server"), server.client() as client:
        response = client.get("/broken")
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"
        assert "deliberate" not in response.text
        assert client.get("/health").status_code == 503
    failures = [record for record in caplog.records if record.exc_info]
    assert failures
    assert "deliberate failure" in str(failures[0].exc_info[1])
