"""thaw snapshot, restore and demo under misuse: bad paths, bad ports, damaged manifests, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thawllm.snapshot.procs import descendant_pids, is_running

from thaw_processes import free_ports, thaw

COMMAND_TIMEOUT_S = 300.0
PHASE_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.01


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory, criu):
    directory = tmp_path_factory.mktemp("misuse") / "smollm2"
    result = thaw("snapshot", "-o", str(directory), "--threads", "1")
    assert result.returncode == 0, result.stderr
    return directory


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Interrupted:
    """A thaw command that gets SIGTERM once a descendant matching a pattern runs; its pids are tracked."""

    def __init__(self, *args: str, tmp_path: Path):
        self.log_path = tmp_path / "command.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "thawllm", *args], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.seen: set[int] = set()

    def terminate_when(self, pattern: str) -> bool:
        """Send SIGTERM once a descendant's command line matches PATTERN; False if the command ended first."""
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            children = descendant_pids(self.process.pid)
            self.seen.update(children)
            if any(re.search(pattern, command_line(pid)) for pid in children):
                self.process.send_signal(signal.SIGTERM)
                return True
            time.sleep(POLL_INTERVAL_S)
        return False

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def leftovers(self) -> dict[int, str]:
        """Return the tracked descendants still running now that the command has exited; then end them.

        A command must stop what it started before it exits, so there is no grace period.
        """
        alive = {pid: command_line(pid) for pid in self.seen if is_running(pid)}
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        return alive

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def test_force_keeps_other_directory(tmp_path, criu):
    victim = tmp_path / "notes"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "data.txt").write_text("keep me")
    result = thaw("snapshot", "-o", str(victim), "--force", "--threads", "1")
    assert result.returncode == 1, result.stdout
    assert "not a snapshot directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert (victim / "sub" / "data.txt").read_text() == "keep me"


def test_force_keeps_regular_file(tmp_path, criu):
    victim = tmp_path / "file.txt"
    victim.write_text("keep me")
    result = thaw("snapshot", "-o", str(victim), "--force", "--threads", "1")
    assert result.returncode == 1, result.stdout
    assert "not a snapshot directory" in result.stderr
    assert victim.read_text() == "keep me"


def test_force_replaces_snapshot(tmp_path, snapshot_dir):
    copy = tmp_path / "copy"
    shutil.copytree(snapshot_dir, copy)
    (copy / "stale").write_text("from the old snapshot")
    result = thaw("snapshot", "-o", str(copy), "--force", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert (copy / "snapshot.json").is_file()
    assert not (copy / "stale").exists()


@pytest.mark.parametrize("output", ["/proc/thaw-snapshot", ".."])
def test_unusable_output_clear_error(output, criu):
    result = thaw("snapshot", "-o", output, "--threads", "1")
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert "[Errno" not in result.stderr
    assert "-o" in result.stderr


@pytest.mark.parametrize("phase, pattern", [
    ("loading", r"thawllm\.instance"),
    ("dumping", r"criu.* dump -t "),
])
def test_sigterm_during_snapshot_leaves_nothing(tmp_path, criu, phase, pattern):
    output = tmp_path / "snapshot"
    command = Interrupted("snapshot", "-o", str(output), "--threads", "1", tmp_path=tmp_path)
    signalled = command.terminate_when(pattern)
    returncode = command.wait()
    assert command.leftovers() == {}, command.log
    assert [path.name for path in tmp_path.iterdir() if "partial" in path.name] == []
    if signalled and returncode != 0:
        assert not output.exists(), command.log
    else:
        # The dump ended before the signal arrived, so the snapshot must be whole.
        assert (output / "snapshot.json").is_file(), command.log


def test_sigterm_during_demo_stops_fresh_server(tmp_path):
    command = Interrupted("demo", tmp_path=tmp_path)
    assert command.terminate_when(r"thawllm serve"), command.log
    command.wait()
    assert command.leftovers() == {}, command.log


@pytest.mark.parametrize("ports, problem", [
    (["--ports", "70000"], "Invalid port 70000"),
    (["--ports", "-5"], "Invalid port -5"),
    (["--port", "65535", "--replicas", "3"], "Invalid port 65536 for replica 2"),
    (["--ports", "41001,41001", "--replicas", "2"], "more than once"),
])
def test_restore_rejects_bad_ports_before_starting(snapshot_dir, ports, problem):
    result = thaw("restore", str(snapshot_dir), *ports, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr
    assert "Replica 1 ready" not in result.stdout


def _set(manifest: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        manifest = manifest[key]
    manifest[last] = value


def _delete(manifest: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        manifest = manifest[key]
    del manifest[last]


@pytest.mark.parametrize("damage, field", [
    (lambda manifest: _set(manifest, "model", "x"), "'model'"),
    (lambda manifest: _delete(manifest, "model.size"), "'model.size'"),
    (lambda manifest: _set(manifest, "model.path", 5), "'model.path'"),
    (lambda manifest: _set(manifest, "cpu", None), "'cpu'"),
    (lambda manifest: _delete(manifest, "cpu.flags"), "'cpu.flags'"),
    (lambda manifest: _set(manifest, "control_pipes", {}), "'control_pipes.stdin'"),
    (lambda manifest: _set(manifest, "control_pipes", "x"), "'control_pipes'"),
    (lambda manifest: _set(manifest, "criu_version", 4), "'criu_version'"),
    (lambda manifest: _set(manifest, "imports", "os"), "'imports'"),
    (lambda manifest: _set(manifest, "engine", "x"), "'engine'"),
])
@pytest.mark.parametrize("fallback", [[], ["--fallback", "cold"]])
def test_damaged_manifest_clear_error(tmp_path, snapshot_dir, damage, field, fallback):
    damaged = tmp_path / "damaged"
    shutil.copytree(snapshot_dir, damaged)
    manifest = json.loads((damaged / "snapshot.json").read_text())
    damage(manifest)
    (damaged / "snapshot.json").write_text(json.dumps(manifest))
    port, = free_ports(1)
    result = thaw("restore", str(damaged), "--port", str(port), *fallback, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert field in result.stderr
    assert "Take the snapshot again" in result.stderr
    assert "Replica 1 ready" not in result.stdout



@pytest.fixture(scope="module")
def truncated_model(tmp_path_factory) -> Path:
    from thawllm.models.files import bundled_model_path

    model = tmp_path_factory.mktemp("models") / "truncated.gguf"
    model.write_bytes(bundled_model_path().read_bytes()[: 5 << 20])
    return model


def test_snapshot_names_model_damage(tmp_path, truncated_model, criu):
    result = thaw("snapshot", str(truncated_model), "-o", str(tmp_path / "snapshot"), "--threads", "1")
    assert result.returncode == 1, result.stdout
    error_line = result.stderr.strip().splitlines()[-1]
    assert error_line.startswith("thaw snapshot: error: ")
    assert "failed to load" in error_line
    assert str(truncated_model) in error_line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "snapshot").exists()


def test_control_serve_names_model_damage(tmp_path, truncated_model, criu):
    # The service's exit races with the supervisor's look at it, so the command runs a few times.
    for attempt in range(5):
        result = subprocess.run([sys.executable, "-m", "thawllm", "serve", str(truncated_model), "--port", "0",
                                 "--control", str(tmp_path / f"control-{attempt}.sock"), "--threads", "1"],
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        supervisor_lines = [line for line in result.stderr.splitlines() if "thaw.supervisor" in line]
        assert any("failed to load" in line for line in supervisor_lines), result.stderr
