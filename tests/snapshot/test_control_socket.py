"""The control socket of `thaw serve --control`: misuse gets a reply and a log line, never a crash."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from thaw_processes import ThawProcess, free_ports, kill_leftovers, wait_healthy

REPLY_TIMEOUT_S = 30.0
TRICKLE_INTERVAL_S = 1.0
TRICKLE_LIMIT_S = 60.0


@pytest.fixture(scope="module")
def started_pids(criu):
    pids: set[int] = set()
    yield pids
    assert kill_leftovers(pids) == []


@pytest.fixture(scope="module")
def service(tmp_path_factory, started_pids):
    """A `thaw serve --control` service for the module, with its control socket path and port."""
    directory = tmp_path_factory.mktemp("control")
    control = directory / "control.sock"
    port, = free_ports(1)
    process = ThawProcess("serve", "--port", str(port), "--control", str(control), "--threads", "1",
                          tracker=started_pids)
    wait_healthy(port)
    yield process, control, port
    process.stop()


def ask(control: Path, data: bytes) -> dict:
    """Send DATA on the control socket and return the JSON reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(REPLY_TIMEOUT_S)
        client.connect(str(control))
        client.sendall(data)
        reply = client.makefile("rb").readline()
    assert reply, "the supervisor closed the connection without a reply"
    return json.loads(reply)


def assert_still_serving(service) -> None:
    process, control, port = service
    assert process.process.poll() is None, process.output
    assert ask(control, b'{"command": "status"}\n')["ok"] is True
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200


# Both nested messages stay under the 64 KiB that the supervisor reads of a command.
@pytest.mark.parametrize("message", [
    b"[" * 60_000 + b"\n",
    b'{"command": ' * 5_000 + b"\n",
    b"\xff\xfe garbage\n",
    b'{"command": "reboot"}\n',
])
def test_malformed_command_rejected(service, message):
    reply = ask(service[1], message)
    assert reply["ok"] is False
    assert reply["message"]
    service[0].wait_for_line(r"WARNING thaw\.supervisor: Rejected", timeout=REPLY_TIMEOUT_S)
    assert_still_serving(service)


@pytest.mark.parametrize("fields, named", [
    ({"output": "/tmp/a\u0000b", "leave_running": True}, "'output'"),
    ({"output": "/tmp/\ud800", "leave_running": True}, "'output'"),
    ({"output": "/tmp/" + "a" * 5000, "leave_running": True}, "File name too long"),
    ({"output": "relative/dir", "leave_running": True}, "'output'"),
    ({"output": "/", "leave_running": True, "force": True}, "-o"),
    ({"output": "/tmp/x", "leave_running": "yes"}, "'leave_running'"),
    ({"output": "/tmp/x", "leave_running": True, "force": "no"}, "'force'"),
])
def test_invalid_snapshot_command_rejected(service, fields, named):
    reply = ask(service[1], json.dumps({"command": "snapshot", **fields}).encode() + b"\n")
    assert reply["ok"] is False
    assert named in reply["message"]
    service[0].wait_for_line(r"WARNING thaw\.supervisor: Rejected a snapshot command", timeout=REPLY_TIMEOUT_S)
    assert_still_serving(service)


def test_string_force_keeps_snapshot(service, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "snapshot.json").write_text("{}")
    command = {"command": "snapshot", "output": str(existing), "leave_running": True, "force": "no"}
    reply = ask(service[1], json.dumps(command).encode() + b"\n")
    assert reply["ok"] is False
    assert (existing / "snapshot.json").read_text() == "{}"
    assert_still_serving(service)


def test_silent_client_does_not_block_others(service):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(service[1]))
        assert_still_serving(service)


def test_trickling_client_cannot_block_sigterm(tmp_path, started_pids):
    control = tmp_path / "control.sock"
    port, = free_ports(1)
    process = ThawProcess("serve", "--port", str(port), "--control", str(control), "--threads", "1",
                          tracker=started_pids)
    try:
        wait_healthy(port)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(control))
            client.sendall(b"{")
            time.sleep(TRICKLE_INTERVAL_S)
            process.process.send_signal(signal.SIGTERM)
            # One byte a second keeps a per-read timeout from ever expiring.
            deadline = time.monotonic() + TRICKLE_LIMIT_S
            dropped = False
            while not dropped and process.process.poll() is None and time.monotonic() < deadline:
                try:
                    client.sendall(b" ")
                except OSError:
                    dropped = True
                time.sleep(TRICKLE_INTERVAL_S)
            assert dropped or process.process.poll() is not None, "the supervisor kept reading\n" + process.output
        process.process.wait(timeout=TRICKLE_LIMIT_S)
    finally:
        process.stop()
    assert not control.exists()


def run_serve_control(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thawllm", "serve", "--port", "0", "--control", str(path)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_control_path_of_regular_file_is_kept(tmp_path, criu):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    result = run_serve_control(notes)
    assert result.returncode == 2, result.stderr
    assert "not a socket" in result.stderr
    assert notes.read_text() == "keep me"


@pytest.mark.parametrize("make_path, problem", [
    (lambda tmp_path: tmp_path / "missing" / "control.sock", "No such file or directory"),
    (lambda tmp_path: tmp_path, "not a socket"),
    (lambda tmp_path: tmp_path / ("a" * 120), "too long"),
])
def test_unusable_control_path_clear_error(tmp_path, criu, make_path, problem):
    result = run_serve_control(make_path(tmp_path))
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr
    assert "--control" in result.stderr
    assert "Traceback" not in result.stderr


def test_control_socket_in_use_clear_error(service):
    result = run_serve_control(service[1])
    assert result.returncode == 2, result.stderr
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert_still_serving(service)
