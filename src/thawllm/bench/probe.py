"""HTTP requests that time a service: readiness polls and completions."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from thawllm.bench.processes import Launched

POLL_INTERVAL_S = 0.005
CONNECT_TIMEOUT_S = 1.0
STATUS_OK = 200


class ProbeError(Exception):
    """A service did not become ready, or its response to a request was not the expected one."""


@dataclass(frozen=True)
class Completion:
    """A completed request: its wall time and the generated token count (None if unknown)."""

    seconds: float
    text: str
    completion_tokens: int | None


def wait_until_ready(client: httpx.Client, url: str, launched: Launched, timeout_s: float,
                     require_ok: bool) -> float:
    """Poll URL until it responds, and return the seconds since LAUNCHED started.

    With REQUIRE_OK only a 200 counts, because a thaw service returns 503
    while it loads. Otherwise any HTTP response counts: the Flask app can
    send one only after its import, and with it the model load, has finished.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if launched.exited():
            raise ProbeError(f"{launched.name} [pid {launched.pid}] exited with status {launched.process.returncode} "
                             f"before it was ready. Its output ends with:\n{launched.log_tail()}")
        try:
            response = client.get(url, timeout=CONNECT_TIMEOUT_S)
        except httpx.TransportError:
            time.sleep(POLL_INTERVAL_S)
            continue
        if response.status_code == STATUS_OK or not require_ok:
            return launched.elapsed_s()
        time.sleep(POLL_INTERVAL_S)
    raise ProbeError(f"{url} was not ready within {timeout_s:.0f} s of the launch [pid {launched.pid}]. "
                     f"Its output ends with:\n{launched.log_tail()}")


def predict(client: httpx.Client, base_url: str, prompt: str, max_tokens: int, timeout_s: float) -> Completion:
    """Send GET /predict at temperature 0 and return the completion."""
    params = {"prompt": prompt, "max_tokens": str(max_tokens), "temperature": "0"}
    started = time.perf_counter()
    response = _checked(client.get(f"{base_url}/predict", params=params, timeout=timeout_s))
    seconds = time.perf_counter() - started
    body = response.json()
    usage = body.get("usage") or {}
    return Completion(seconds, body["result"], usage.get("completion_tokens"))


def complete(client: httpx.Client, base_url: str, prompt: str, max_tokens: int, timeout_s: float) -> Completion:
    """Send POST /v1/completions at temperature 0 and return the completion with its token count."""
    payload = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    response = _checked(client.post(f"{base_url}/v1/completions", json=payload, timeout=timeout_s))
    seconds = time.perf_counter() - started
    body = response.json()
    return Completion(seconds, body["choices"][0]["text"], body["usage"]["completion_tokens"])


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code != STATUS_OK:
        raise ProbeError(f"{response.request.method} {response.request.url} returned "
                         f"{response.status_code}: {response.text[:300]}")
    return response
