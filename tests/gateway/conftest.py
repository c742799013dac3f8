"""Run a real `thaw gateway` process per test, talk HTTP to it, and check that it leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

THAW_COMMAND = Path(sys.executable).with_name("thaw")
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 60.0
# A criu gateway may take its snapshot before it listens.
CRIU_READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05
STARTERS = ("cold", "criu")
# One inference thread per instance, so that several instances share the two
# cores of a small test machine without fighting over them.
INSTANCE_ARGS = ("--threads", "1")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def is_thaw_process(pid: int) -> bool:
    """True when PID runs thaw's code, so that a reused pid is never taken for a leftover."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"thaw" in cmdline.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendant_pids(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    found, pending = set(), [root]
    while pending:
        parent = pending.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        pending.extend(children)
    return found


def parse_metrics(text: str) -> dict[str, float]:
    """Map each sample, such as 'thaw_gateway_instances{state="ready"}', to its value."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def criu_problem() -> str | None:
    """Return why criu restores cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "criu restores need root"
    from thawllm.snapshot.criu import Criu, CriuError

    try:
        Criu.find()
    except CriuError as exc:
        return str(exc)
    return None


class GatewayProcess:
    """One `thaw gateway` process with its stderr in a file, and the instance pids it reported."""

    def __init__(self, process: subprocess.Popen, port: int, stderr_path: Path, api_key: str | None):
        self.process = process
        self.port = port
        self.stderr_path = stderr_path
        self.api_key = api_key
        self.seen_pids: set[int] = set()

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT_S, headers=headers, **kwargs)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"thaw gateway on port {self.port} (exit status {self.process.poll()}), stderr:\n{self.log()}"

    def status(self) -> dict:
        with self.client() as client:
            response = client.get("/gateway/status")
        assert response.status_code == 200, response.text
        status = response.json()
        self.seen_pids.update(item["pid"] for item in status["instances"] if item["pid"])
        return status

    def metrics(self) -> dict[str, float]:
        with self.client() as client:
            response = client.get("/metrics")
        assert response.status_code == 200, response.text
        return parse_metrics(response.text)

    @staticmethod
    def process_alive(pid: int) -> bool:
        return pid_alive(pid)

    def instance_pids(self) -> list[int]:
        return [item["pid"] for item in self.status()["instances"] if item["pid"]]

    def ready_count(self) -> int:
        return int(self.metrics()['thaw_gateway_instances{state="ready"}'])

    def wait_for(self, condition, description: str, timeout_s: float = 60.0):
        """Poll CONDITION until it returns a true value; after TIMEOUT_S fail with DESCRIPTION and the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None:
                break
            time.sleep(POLL_INTERVAL_S)
        pytest.fail(f"Timed out after {timeout_s} s waiting for {description}.\n{self.describe()}")

    def wait_until_healthy(self, timeout_s: float) -> None:
        def healthy() -> bool:
            try:
                return httpx.get(f"{self.base_url}/health", timeout=5.0).status_code == 200
            except httpx.TransportError:
                return False

        self.wait_for(healthy, "/health to answer 200", timeout_s)

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Send SIGTERM and wait for the exit; SIGKILL after TIMEOUT_S. Return the exit status."""
        if self.process.poll() is None:
            self.seen_pids.update(descendant_pids(self.process.pid))
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        return self.process.returncode


@pytest.fixture(params=STARTERS)
def starter(request) -> str:
    """Each test that uses this runs once per starter; criu skips without root or criu, except under CI=true."""
    if request.param == "criu":
        problem = criu_problem()
        if problem and os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but criu restores cannot run here: {problem}")
        if problem:
            pytest.skip(f"criu restores cannot run here: {problem}")
    return request.param


@pytest.fixture(scope="session")
def snapshot_cache(tmp_path_factory) -> Path:
    """One cache for the session, so that the criu gateways snapshot the model once."""
    return tmp_path_factory.mktemp("snapshot-cache")


def launch_gateway(log_dir: Path, snapshot_cache: Path, *args: str, starter: str = "cold",
                   api_key: str | None = None, wait: bool = True) -> GatewayProcess:
    """Start `thaw gateway` with ARGS on a free loopback port; by default wait until /health is 200."""
    port = free_port()
    key_args = ("--api-key", api_key) if api_key else ()
    command = [str(THAW_COMMAND), "gateway", "--host", LOOPBACK, "--port", str(port), "--starter", starter,
               "--snapshot-cache", str(snapshot_cache), "--drain-timeout", "10", *INSTANCE_ARGS,
               *key_args, *args]
    stderr_path = log_dir / f"gateway-{port}.log"
    env = {**os.environ}
    env.pop("THAW_API_KEY", None)
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr, env=env)
    gateway = GatewayProcess(process, port, stderr_path, api_key)
    if wait:
        try:
            gateway.wait_until_healthy(CRIU_READY_TIMEOUT_S if starter == "criu" else READY_TIMEOUT_S)
        except BaseException:
            gateway.terminate()
            raise
    return gateway


def stop_and_check(gateways: list[GatewayProcess]) -> None:
    """Stop GATEWAYS and fail if any thaw process that they started is still alive."""
    leftovers = []
    for gateway in gateways:
        gateway.terminate()
        leftovers += [pid for pid in gateway.seen_pids if pid_alive(pid) and is_thaw_process(pid)]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], f"processes left behind by the gateway: {leftovers}"


@pytest.fixture
def start_gateway(tmp_path, snapshot_cache):
    """Start `thaw gateway` processes for one test; at its end stop them and check that no process is left."""
    started: list[GatewayProcess] = []

    def start(*args: str, **kwargs) -> GatewayProcess:
        gateway = launch_gateway(tmp_path, snapshot_cache, *args, **kwargs)
        started.append(gateway)
        return gateway

    yield start
    stop_and_check(started)


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory, snapshot_cache):
    """One cold-start gateway for a whole module of tests that do not depend on the starter."""
    gateway = launch_gateway(tmp_path_factory.mktemp("gateway"), snapshot_cache,
                             "--max-instances", "1", "--idle-timeout", "60")
    yield gateway
    stop_and_check([gateway])
