"""Fixtures shared by the snapshot tests: a usable criu, and a watch for leftover processes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from thawllm.snapshot import procs
from thawllm.snapshot.criu import Criu, CriuError, privilege_problem
from thawllm.snapshot.provision import PrivateCriu, default_prefix
from thawllm.snapshot.selftest import ECHO_PROGRAM


def skip_or_fail(reason: str) -> None:
    """Skip the test for a missing prerequisite, except under CI=true, where it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires this prerequisite: {reason}")
    pytest.skip(reason)


@pytest.fixture
def missing_prerequisite() -> Callable[[str], None]:
    """skip_or_fail, for test modules, which cannot import from conftest."""
    return skip_or_fail


@pytest.fixture
def privileged() -> None:
    """Require the privileges that criu and the private criu installer need."""
    problem = privilege_problem()
    if problem:
        skip_or_fail(problem)


@pytest.fixture(scope="session")
def criu() -> Criu:
    """The criu that thaw would use here, found by Criu.find()."""
    try:
        return Criu.find()
    except CriuError as exc:
        skip_or_fail(f"no usable criu: {exc}")
        raise


@pytest.fixture(scope="session")
def private_criu() -> PrivateCriu:
    """The private criu that 'thaw doctor --install-criu' installed in the default prefix."""
    installed = PrivateCriu.load(default_prefix())
    if installed is None:
        skip_or_fail(f"no private criu in {default_prefix()}; run 'thaw doctor --install-criu'")
    return installed


class ProcessWatch:
    """Pids present when the watch started, to find processes that a test left behind.

    Other work on the machine starts processes too, so only new processes
    whose command line names a marker of this test count.
    """

    def __init__(self, markers: list[str]) -> None:
        self.markers = markers
        self.before = _pids()

    def leftovers(self) -> dict[int, str]:
        """Return {pid: command line} of new, running processes that match a marker.

        Zombies are left out: init reaps an ended process a moment later.
        """
        found = {}
        for pid in _pids() - self.before:
            command = _command_line(pid)
            if not procs.is_running(pid):
                continue
            if any(marker in command for marker in self.markers):
                found[pid] = command
        return found


@pytest.fixture
def process_watch(tmp_path: Path) -> Iterator[ProcessWatch]:
    """A ProcessWatch for the self-test's echo process and anything naming tmp_path.

    Whatever it still finds after the test is killed by pid.
    """
    watch = ProcessWatch([ECHO_PROGRAM.splitlines()[1], str(tmp_path)])
    yield watch
    for pid in watch.leftovers():
        procs.kill_and_wait(pid)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that tempfile uses for the test, so criu's work files land under tmp_path."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def _pids() -> set[int]:
    return {int(name) for name in os.listdir("/proc") if name.isdigit()}


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
