"""Snapshot, restore and live snapshot with real CRIU, real processes and real HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from thawllm.models.files import bundled_model_path
from thawllm.snapshot.manifest import load_manifest

from thaw_processes import (ThawProcess, free_ports, kill_leftovers, pid_alive, predict, snapshot_files,
                         thaw, wait_healthy)

PROMPT = "SpaceX"


@pytest.fixture(scope="module")
def snapshots_available():
    """Skip without root or a working criu, except under CI=true, where that fails."""
    from thawllm.snapshot.criu import Criu, CriuError

    problem = None
    if os.geteuid() != 0:
        problem = "snapshots need root"
    else:
        try:
            Criu.find()
        except CriuError as exc:
            problem = str(exc)
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def started_pids(snapshots_available):
    pids: set[int] = set()
    yield pids
    leftovers = kill_leftovers(pids)
    assert leftovers == [], f"processes still running after the tests: {leftovers}"


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory, snapshots_available):
    directory = tmp_path_factory.mktemp("snapshots") / "smollm2"
    result = thaw("snapshot", "-o", str(directory))
    assert result.returncode == 0, result.stderr
    assert "Snapshot written to" in result.stdout
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def fresh_answer(started_pids):
    port, = free_ports(1)
    server = ThawProcess("serve", "--port", str(port), tracker=started_pids)
    try:
        wait_healthy(port)
        return predict(port, PROMPT)
    finally:
        server.stop()


def test_snapshot_is_private_and_complete(snapshot_dir):
    manifest = load_manifest(snapshot_dir)
    assert manifest.values["model"]["path"] == str(bundled_model_path())
    assert set(manifest.pipes) == {"stdin", "stdout", "stderr"}
    assert stat.S_IMODE(snapshot_dir.stat().st_mode) == 0o700
    for path in snapshot_files(snapshot_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_restore_answers_like_fresh_start(snapshot_dir, fresh_answer, started_pids):
    port, = free_ports(1)
    restore = ThawProcess("restore", str(snapshot_dir), "--port", str(port), tracker=started_pids)
    try:
        line, = restore.wait_for_line(r"Replica 1 ready")
        replica_pid = int(re.search(r"\[pid (\d+)\]", line).group(1))
        wait_healthy(port)
        assert predict(port, PROMPT) == fresh_answer
        # The replica is in our mount namespace, whatever namespace criu ran in.
        assert os.readlink(f"/proc/{replica_pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    finally:
        assert restore.stop() == 0, restore.output
    assert "Restored from" in restore.output


def test_three_replicas_answer_concurrently(snapshot_dir, fresh_answer, started_pids):
    ports = free_ports(3)
    restore = ThawProcess("restore", str(snapshot_dir), "--replicas", "3",
                          "--ports", ",".join(map(str, ports)), tracker=started_pids)
    answers: dict[int, str] = {}
    try:
        restore.wait_for_line(r"Replica \d ready", count=3)
        threads = [threading.Thread(target=lambda p=port: answers.__setitem__(p, predict(p, PROMPT)))
                   for port in ports]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        restore.stop()
    assert answers == {port: fresh_answer for port in ports}


def test_live_snapshot_while_streaming(tmp_path, started_pids, fresh_answer):
    port, restored_port = free_ports(2)
    control = tmp_path / "control.sock"
    output = tmp_path / "live"
    service = ThawProcess("serve", "--port", str(port), "--control", str(control), tracker=started_pids)
    try:
        wait_healthy(port)
        assert stat.S_IMODE(control.stat().st_mode) == 0o600
        chunks: list[str] = []
        streaming = threading.Event()

        def stream() -> None:
            body = {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stream": True}
            with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    streaming.set()
                    chunks.append(line)

        client = threading.Thread(target=stream)
        client.start()
        assert streaming.wait(timeout=60)
        result = thaw("snapshot", "--control", str(control), "-o", str(output))
        client.join(timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert chunks[-1] == "data: [DONE]" or chunks[-2:] == ["data: [DONE]", ""]
    finally:
        service.stop()

    restore = ThawProcess("restore", str(output), "--port", str(restored_port), tracker=started_pids)
    try:
        restore.wait_for_line(r"Replica 1 ready")
        assert predict(restored_port, PROMPT) == fresh_answer
    finally:
        restore.stop()


def test_live_snapshot_leave_running(tmp_path, started_pids):
    port, = free_ports(1)
    control = tmp_path / "control.sock"
    service = ThawProcess("serve", "--port", str(port), "--control", str(control), tracker=started_pids)
    try:
        wait_healthy(port)
        result = thaw("snapshot", "--control", str(control), "-o", str(tmp_path / "live"), "--leave-running")
        assert result.returncode == 0, result.stdout + result.stderr
        wait_healthy(port)
        assert predict(port)
    finally:
        service.stop()


def test_changed_model_rejected_then_cold_fallback(tmp_path, started_pids):
    model = tmp_path / "model.gguf"
    shutil.copyfile(bundled_model_path(), model)
    snapshot = tmp_path / "snapshot"
    result = thaw("snapshot", str(model), "-o", str(snapshot))
    assert result.returncode == 0, result.stderr
    later = model.stat().st_mtime + 10
    os.utime(model, (later, later))

    port, = free_ports(1)
    refused = thaw("restore", str(snapshot), "--port", str(port), timeout=60)
    assert refused.returncode != 0
    assert "model.mtime_ns" in refused.stderr

    fallback = ThawProcess("restore", str(snapshot), "--port", str(port), "--fallback", "cold", tracker=started_pids)
    try:
        fallback.wait_for_line(r"Replica 1 ready")
        assert predict(port)
    finally:
        fallback.stop()


@pytest.mark.parametrize("image", ["pages-*.img", "mm-*.img", "core-*.img"])
def test_truncated_image_clear_error(snapshot_dir, tmp_path, image):
    damaged = tmp_path / "damaged"
    shutil.copytree(snapshot_dir, damaged)
    target = max((damaged / "images").glob(image), key=lambda path: path.stat().st_size)
    with open(target, "r+b") as file:
        file.truncate(target.stat().st_size // 2)

    port, = free_ports(1)
    outcome = run_adopting_orphans("restore", str(damaged), "--port", str(port), tmp_dir=tmp_path)
    assert outcome["returncode"] != 0
    assert "restore" in outcome["stderr"].lower()
    assert "Traceback" not in outcome["stderr"]
    assert outcome["left_behind"] == []


# Runs a thaw command as a child subreaper: any process the command leaves
# behind becomes this wrapper's child, so it is found (and ended) by pid.
ADOPTING_WRAPPER = """
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
result = subprocess.run([sys.executable, "-m", "thawllm", *sys.argv[1:]], capture_output=True, text=True, timeout=120)
time.sleep(0.5)
left = []
for task in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{task}/children") as children:
        left += [int(pid) for pid in children.read().split()]
for pid in left:
    os.kill(pid, signal.SIGKILL)
print(json.dumps({"returncode": result.returncode, "stderr": result.stderr, "left_behind": left}))
"""


def run_adopting_orphans(*args: str, tmp_dir: Path) -> dict:
    """Run the command with TMPDIR set to TMP_DIR, where a failed restore keeps criu's log."""
    completed = subprocess.run([sys.executable, "-c", ADOPTING_WRAPPER, *args], capture_output=True,
                               text=True, timeout=180, env={**os.environ, "TMPDIR": str(tmp_dir)})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_replica_exits_when_supervisor_dies(snapshot_dir, started_pids):
    port, = free_ports(1)
    restore = ThawProcess("restore", str(snapshot_dir), "--port", str(port), tracker=started_pids)
    try:
        line, = restore.wait_for_line(r"Replica 1 ready")
        replica_pid = int(re.search(r"\[pid (\d+)\]", line).group(1))
        restore.process.kill()
    finally:
        restore.stop()

    deadline = time.monotonic() + 30
    while pid_alive(replica_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(replica_pid)
