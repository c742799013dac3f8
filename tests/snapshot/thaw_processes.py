"""Run thaw commands as real processes for the snapshot tests, and track every pid they start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120.0
# "Replica 2 ready on http://127.0.0.1:8081 in 41 ms [pid 1234]", with the pid as seen from here.
PID_PATTERN = re.compile(r"^Replica \d+ ready .*\[pid (\d+)\]")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def thaw(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thawllm", *args], capture_output=True, text=True,
                          timeout=timeout)


class ThawProcess:
    """A long-running thaw command; its output lines are collected and its pids tracked."""

    def __init__(self, *args: str, tracker: set[int]):
        self.process = subprocess.Popen([sys.executable, "-m", "thawllm", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.tracker = tracker
        tracker.add(self.process.pid)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            match = PID_PATTERN.match(line)
            if match:
                self.tracker.add(int(match.group(1)))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, count: int = 1, timeout: float = READY_TIMEOUT_S) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matches = [line for line in list(self.lines) if re.search(pattern, line)]
            if len(matches) >= count:
                return matches
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"No {count} line(s) matching {pattern!r}; output:\n{self.output}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        self.process.stdout.close()
        return self.process.returncode


def wait_healthy(port: int, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"Port {port} was not healthy within {timeout} s")


def predict(port: int, prompt: str = "SpaceX", max_tokens: int = 12) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/predict",
                         params={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def snapshot_files(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


def kill_leftovers(pids: set[int]) -> list[int]:
    """End tracked processes that are still alive, by pid; return their pids."""
    alive = [pid for pid in pids if pid > 1 and pid_alive(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive
