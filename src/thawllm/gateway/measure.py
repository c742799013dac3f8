"""Measure a real gateway: the first response from zero instances, and the cost of the extra hop.

measure_gateway() launches `thaw gateway` as a child process on a free
loopback port. It times requests that arrive while no instance runs (the
instance starts for them), then sends warm requests alternately through the
gateway and straight to its instance, and compares their latencies. The
figures are for benchmarks and the README, never for test assertions.

Run it as `python -m thawllm.gateway.measure [SOURCE] --starter cold`; the
arguments after `--` go to `thaw gateway`, for example `-- --ctx-size 4096`.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
# Short, so that the instance stops between the from-zero samples; the warm
# requests follow each other closely enough to keep it running.
IDLE_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 300.0
ZERO_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05
FIRST_REQUEST = {"prompt": "Hello", "max_tokens": 1, "temperature": 0}
# One warm request does model work (one token), the other only HTTP and routing.
WARM_PROBES = {
    "completion": ("POST", "/v1/completions", FIRST_REQUEST),
    "models": ("GET", "/v1/models", None),
}


class MeasureError(Exception):
    """The gateway could not be started or measured."""


def measure_gateway(source: str | None, starter: str, requests: int = 200, *, from_zero: int = 3,
                    threads: int | None = None, snapshot_cache: Path | None = None,
                    gateway_args: list[str] = ()) -> dict:
    """Launch a gateway on SOURCE with STARTER and return its latencies in seconds and milliseconds.

    The first FROM_ZERO requests each arrive while no instance runs. Then
    REQUESTS warm requests of each probe go through the gateway, alternating
    with as many sent straight to the instance. GATEWAY_ARGS are added to
    the gateway's command line, for example ["--ctx-size", "4096"].
    """
    gateway = LaunchedGateway(source, starter, threads, snapshot_cache, list(gateway_args))
    try:
        gateway.wait_until_healthy()
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
            first = [gateway.time_from_zero(client) for _ in range(from_zero)]
            warm = {name: compare_warm(client, gateway, probe, requests) for name, probe in WARM_PROBES.items()}
            start_seconds = gateway.start_seconds(client)
    finally:
        gateway.stop()
    return {
        "source": source or "bundled model", "starter": starter, "requests": requests,
        "first_response_s": first, "first_response_median_s": _percentile(first, 50),
        "instance_start_mean_s": start_seconds, "warm": warm,
    }


class LaunchedGateway:
    """A `thaw gateway` child process with one instance at most."""

    def __init__(self, source: str | None, starter: str, threads: int | None, snapshot_cache: Path | None,
                 gateway_args: list[str]):
        self.port = _free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        command = [sys.executable, "-m", "thawllm", "gateway", *([source] if source else []),
                   "--port", str(self.port), "--starter", starter, "--max-instances", "1",
                   "--idle-timeout", str(IDLE_TIMEOUT_S), "--drain-timeout", "5"]
        if threads:
            command += ["--threads", str(threads)]
        if snapshot_cache:
            command += ["--snapshot-cache", str(snapshot_cache)]
        command += gateway_args
        # A file rather than a pipe, because nothing reads the log while the gateway runs.
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self.log)

    def wait_until_healthy(self) -> None:
        _wait(lambda: self._get_ok("/health"), READY_TIMEOUT_S, "the gateway to answer /health", self)

    def time_from_zero(self, client: httpx.Client) -> float:
        _wait(lambda: self.status(client)["instances"] == [], ZERO_TIMEOUT_S, "zero instances", self)
        started = time.perf_counter()
        _check(client.post(self.base_url + "/v1/completions", json=FIRST_REQUEST))
        return time.perf_counter() - started

    def status(self, client: httpx.Client) -> dict:
        return _check(client.get(self.base_url + "/gateway/status")).json()

    def instance_url(self, client: httpx.Client) -> str:
        ports = [item["port"] for item in self.status(client)["instances"] if item["port"]]
        if len(ports) != 1:
            raise MeasureError(f"Expected one running instance, the gateway lists ports {ports}.")
        return f"http://{LOOPBACK}:{ports[0]}"

    def start_seconds(self, client: httpx.Client) -> float | None:
        """Return the mean instance start time from the gateway's histogram."""
        samples = {}
        for line in _check(client.get(self.base_url + "/metrics")).text.splitlines():
            if line.startswith("thaw_gateway_instance_start_seconds_"):
                name, _, value = line.rpartition(" ")
                samples[name.split("{")[0]] = float(value)
        count = samples.get("thaw_gateway_instance_start_seconds_count")
        return samples["thaw_gateway_instance_start_seconds_sum"] / count if count else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def _get_ok(self, path: str) -> bool:
        try:
            return httpx.get(self.base_url + path, timeout=5.0, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False


def compare_warm(client: httpx.Client, gateway: LaunchedGateway, probe: tuple, requests: int) -> dict:
    """Send PROBE alternately through the gateway and straight to its instance; compare the latencies."""
    method, path, body = probe
    _check(client.request(method, gateway.base_url + path, json=body))
    direct_url = gateway.instance_url(client)
    direct, through = [], []
    for _ in range(requests):
        through.append(_timed(client, method, gateway.base_url + path, body))
        direct.append(_timed(client, method, direct_url + path, body))
    figures = {}
    for percentile in (50, 99):
        direct_ms = _percentile(direct, percentile) * 1000
        gateway_ms = _percentile(through, percentile) * 1000
        figures[f"direct_p{percentile}_ms"] = round(direct_ms, 3)
        figures[f"gateway_p{percentile}_ms"] = round(gateway_ms, 3)
        figures[f"overhead_p{percentile}_ms"] = round(gateway_ms - direct_ms, 3)
    return figures


def _timed(client: httpx.Client, method: str, url: str, body: dict | None) -> float:
    started = time.perf_counter()
    _check(client.request(method, url, json=body))
    return time.perf_counter() - started


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise MeasureError(f"{response.request.method} {response.request.url} returned status "
                           f"{response.status_code}: {response.text[:500]}")
    return response


def _percentile(values: list[float], percentile: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


def _wait(condition, timeout_s: float, description: str, gateway: LaunchedGateway) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise MeasureError(f"The gateway exited with status {gateway.process.returncode} while waiting "
                               f"for {description}:\n{gateway.log_tail()}")
        if condition():
            return
        time.sleep(POLL_INTERVAL_S)
    raise MeasureError(f"Timed out after {timeout_s:g} s waiting for {description}.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thawllm.gateway.measure",
                                     description="Measure the gateway's start from zero and its warm overhead.",
                                     epilog="Arguments after -- go to 'thaw gateway'.")
    parser.add_argument("source", nargs="?", default=None, help="snapshot directory or GGUF model (default: bundled)")
    parser.add_argument("--starter", choices=["criu", "cold"], default="cold", help="starter to measure (default cold)")
    parser.add_argument("--requests", type=int, default=200, help="warm requests per probe and path (default 200)")
    parser.add_argument("--from-zero", type=int, default=3, help="requests timed from zero instances (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads per instance (default: all cores)")
    argv = sys.argv[1:] if argv is None else argv
    gateway_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        result = measure_gateway(args.source, args.starter, args.requests, from_zero=args.from_zero,
                                 threads=args.threads, gateway_args=gateway_args)
    except MeasureError as exc:
        print(f"measure: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
