"""Processes that a benchmark starts, and their ending by pid.

Each command runs in a session of its own, so Ctrl-C in the terminal
reaches only the benchmark, which then ends every process it started in
order (SIGTERM, then SIGKILL). Processes that leave the tree, such as
replicas restored by criu, are tracked through pidfds taken while they
were known, so a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("thaw.bench")

STOP_TIMEOUT_S = 15.0
KILL_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 12
PROC = Path("/proc")
INTERRUPTING_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends, so that starting or ending a process is never cut in half.

    A signal that arrives meanwhile is delivered, as KeyboardInterrupt,
    right after the block.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Launched:
    """One command started by the benchmark, with its output in a log file."""

    def __init__(self, argv: Sequence[str], name: str, log_path: Path, env: dict | None = None):
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                            preexec_fn=_unblock_signals)
        self.pid = self.process.pid
        self._adopted: dict[int, int] = {}

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def exited(self) -> bool:
        return self.process.poll() is not None

    def adopt(self, pid: int) -> None:
        """Track PID, which this command started, so that stop() ends it even outside the tree."""
        if pid == self.pid or pid in self._adopted:
            return
        try:
            self._adopted[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def stop(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End the command and every process it started: SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        with signals_deferred():
            self._stop(stop_timeout_s)

    def _stop(self, stop_timeout_s: float) -> None:
        for pid in descendant_pids(self.pid):
            self.adopt(pid)
        if not self.exited():
            self.process.send_signal(signal.SIGTERM)
            if self.wait(stop_timeout_s) is None:
                logger.warning("%s [pid %d] ignored SIGTERM for %.1f s; sending SIGKILL.",
                               self.name, self.pid, stop_timeout_s)
                self.process.kill()
                self.wait(KILL_TIMEOUT_S)
        for pid, pidfd in self._adopted.items():
            _end_by_pidfd(pid, pidfd, stop_timeout_s)
            os.close(pidfd)
        self._adopted.clear()


def _unblock_signals() -> None:
    """Clear the signal mask in a new child, which would otherwise inherit signals_deferred()'s.

    It runs between fork and exec; the benchmark runs no threads, which
    makes a preexec_fn safe.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _end_by_pidfd(pid: int, pidfd: int, stop_timeout_s: float) -> None:
    for sig, timeout_s in ((signal.SIGTERM, stop_timeout_s), (signal.SIGKILL, KILL_TIMEOUT_S)):
        if _pidfd_exited(pidfd, 0):
            return
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return
        if _pidfd_exited(pidfd, timeout_s):
            return
    logger.error("Process %d did not exit after SIGKILL.", pid)


def _pidfd_exited(pidfd: int, timeout_s: float) -> bool:
    readable, _, _ = select.select([pidfd], [], [], timeout_s)
    return bool(readable)


def parent_pid(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and brackets, so fields are counted from the last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[1])


def descendant_pids(pid: int) -> list[int]:
    """Return every descendant of PID, parents first, by scanning /proc once."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = parent_pid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending.extend(children.get(child, []))
    return found


class ProcessTracker:
    """Every command a benchmark run has started and not yet stopped."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self._running: list[Launched] = []
        self._count = 0

    def launch(self, argv: Sequence[str], name: str, env: dict | None = None) -> Launched:
        self._count += 1
        with signals_deferred():
            launched = Launched(argv, name, self.log_dir / f"{self._count:03d}-{name}.log", env=env)
            self._running.append(launched)
        logger.debug("Started %s [pid %d]: %s", name, launched.pid, " ".join(launched.argv))
        return launched

    def stop(self, launched: Launched) -> None:
        launched.stop()
        if launched in self._running:
            self._running.remove(launched)

    def stop_all(self) -> None:
        """End every command still running, newest first."""
        for launched in reversed(list(self._running)):
            self.stop(launched)
