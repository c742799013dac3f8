"""Shared test helpers: start a real `thaw serve` process and talk HTTP to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

THAW_COMMAND = Path(sys.executable).with_name("thaw")
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
HEALTH_POLL_INTERVAL_S = 0.05
# One inference thread keeps a test server from competing with the test process
# and with other servers for the CPU cores.
DEFAULT_SERVE_ARGS = ("--threads", "1")


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class ServeProcess:
    """A `thaw serve` process started by a test, with its stderr in a file."""

    process: subprocess.Popen
    port: int
    stderr_path: Path
    api_key: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def client(self, timeout_s: float = 120.0, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers, **kwargs)

    def describe(self) -> str:
        """The command's exit status and stderr, for assertion messages."""
        return f"thaw serve on port {self.port} (exit status {self.process.poll()}), stderr:\n{self.stderr_text()}"

    def wait_until_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"thaw serve exited before it served.\n{self.describe()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=5.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(HEALTH_POLL_INTERVAL_S)
        pytest.fail(f"thaw serve did not answer /health with 200 within {timeout_s} s.\n{self.describe()}")

    def stop(self) -> None:
        """End the process: SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT_S."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


def start_thaw_serve(stderr_dir: Path, *args: str, api_key: str | None = None, wait: bool = True,
                     extra_env: dict[str, str] | None = None) -> ServeProcess:
    """Start `thaw serve` with ARGS on a free loopback port; by default wait until /health is 200."""
    port = free_port()
    key_args = ("--api-key", api_key) if api_key else ()
    command = [str(THAW_COMMAND), "serve", "--host", LOOPBACK, "--port", str(port),
               *DEFAULT_SERVE_ARGS, *key_args, *args]
    stderr_path = stderr_dir / f"thaw-serve-{port}.log"
    env = {**os.environ, "THAW_LOG_LEVEL": "DEBUG"}
    env.pop("THAW_API_KEY", None)
    env.update(extra_env or {})
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr, env=env)
    server = ServeProcess(process, port, stderr_path, api_key)
    if wait:
        try:
            server.wait_until_healthy()
        except BaseException:
            server.stop()
            raise
    return server


@pytest.fixture(scope="module")
def serve_factory(tmp_path_factory):
    """Start `thaw serve` processes for one test module and stop them all at its end."""
    started: list[ServeProcess] = []
    stderr_dir = tmp_path_factory.mktemp("thaw-serve")

    def start(*args: str, **kwargs) -> ServeProcess:
        server = start_thaw_serve(stderr_dir, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
