"""Dump and restore a tiny process the way thaw handles templates, to prove that criu works here."""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from thawllm.snapshot import procs
from thawllm.snapshot.criu import Criu, CriuError, CriuFailed

log = logging.getLogger("thaw.snapshot")

START_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 5.0
SELFTEST_DUMP_TIMEOUT_S = 30.0
SELFTEST_RESTORE_TIMEOUT_S = 30.0
STD_FDS = (0, 1, 2)

# Echoes each line from stdin to stdout, so a restored copy proves that its
# pipes were reconnected to the caller's new pipes.
ECHO_PROGRAM = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"


class SelfTestError(CriuError):
    """The self-test's tiny process did not start, or did not echo after its restore."""


@dataclass(frozen=True)
class SelfTestResult:
    """Durations of one self-test, in milliseconds."""

    dump_ms: float
    restore_ms: float


class TinyTemplate:
    """A tiny echo process started the way thaw starts a template.

    It is PID 1 of its own PID namespace (unshare --pid --fork), leads its
    own session (setsid), and its stdin, stdout and stderr are pipes to us.
    `pid` is its pid in our namespace; `launcher` is the unshare process.
    """

    def __init__(self) -> None:
        command = ["unshare", "--pid", "--fork", "setsid", sys.executable, "-I", "-S", "-c", ECHO_PROGRAM]
        try:
            self.launcher = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise SelfTestError(f"Could not start the self-test process with {command[0]}: {exc}") from exc
        self.pid = 0
        self._pidfd: int | None = None
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> TinyTemplate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        # The echo proves that python runs and reads stdin, so setsid has
        # already made it a session leader.
        stdin, stdout = self.launcher.stdin.fileno(), self.launcher.stdout.fileno()
        answer = exchange_line(stdin, stdout, b"ready\n", START_TIMEOUT_S)
        if answer != b"ready\n":
            stderr = self._stderr_text()
            raise SelfTestError(
                f"The self-test process did not start: it echoed {answer!r} instead of b'ready\\n'. {stderr}"
            )
        children = procs.child_pids(self.launcher.pid)
        if len(children) != 1:
            raise SelfTestError(f"unshare (pid {self.launcher.pid}) has children {children}, expected one.")
        self.pid = children[0]
        # Held until stop(), so that a SIGKILL cannot reach a process that
        # reused the pid after criu's dump ended this one.
        self._pidfd = os.pidfd_open(self.pid)

    def _stderr_text(self) -> str:
        if self.launcher.poll() is None:
            return ""
        return self.launcher.stderr.read().decode(errors="replace").strip()

    def pipe_keys(self) -> dict[int, str]:
        """Return criu's name of the pipe behind each standard fd, such as {0: 'pipe:[123]'}."""
        return {fd: os.readlink(f"/proc/{self.pid}/fd/{fd}") for fd in STD_FDS}

    def wait_for_launcher(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait for unshare to exit after its child was dumped and killed."""
        try:
            self.launcher.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SelfTestError(
                f"criu reported a successful dump, but the dumped process {self.pid} still runs "
                f"{timeout_s:g} s later, so this criu does not work."
            ) from None

    def stop(self) -> None:
        """End the echo process and unshare, by pid, and close our pipe ends."""
        if self._pidfd is not None:
            procs.kill_pidfd_and_wait(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self.launcher.poll() is None:
            self.launcher.kill()
        self.launcher.wait(timeout=START_TIMEOUT_S)
        for stream in (self.launcher.stdin, self.launcher.stdout, self.launcher.stderr):
            stream.close()


class ReplacementPipes:
    """Fresh pipes for a restored process's stdin, stdout and stderr."""

    def __init__(self) -> None:
        self.stdin_read, self.stdin_write = os.pipe()
        self.stdout_read, self.stdout_write = os.pipe()
        self.stderr_read, self.stderr_write = os.pipe()
        self._child_ends = [self.stdin_read, self.stdout_write, self.stderr_write]
        self._our_ends = [self.stdin_write, self.stdout_read, self.stderr_read]

    def __enter__(self) -> ReplacementPipes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_child_ends()
        for fd in self._our_ends:
            os.close(fd)

    def inherit_fds(self, keys: dict[int, str]) -> dict[int, str]:
        """Map each child end to the dumped pipe that it replaces, for Criu.restore."""
        return dict(zip(self._child_ends, (keys[fd] for fd in STD_FDS)))

    def close_child_ends(self) -> None:
        """Close the ends that only the restored process needs."""
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []


def exchange_line(write_fd: int, read_fd: int, line: bytes, timeout_s: float) -> bytes:
    """Write `line` and return what comes back up to a newline, EOF or the timeout."""
    os.write(write_fd, line)
    deadline = time.monotonic() + timeout_s
    answer = b""
    while not answer.endswith(b"\n"):
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0 or not select.select([read_fd], [], [], remaining_s)[0]:
            break
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        answer += chunk
    return answer


def run_selftest(criu: Criu) -> SelfTestResult:
    """Dump a TinyTemplate, restore it with new pipes, and check that it echoes.

    Raises CriuFailed when criu fails and SelfTestError when the processes
    misbehave. Every process it started is ended by pid, and its temporary
    files are removed, whatever the outcome.
    """
    work_dir = Path(tempfile.mkdtemp(prefix="thaw-criu-selftest-"))
    images_dir = work_dir / "images"
    try:
        with TinyTemplate() as template:
            keys = template.pipe_keys()
            dump_s = criu.dump(template.pid, images_dir, timeout_s=SELFTEST_DUMP_TIMEOUT_S)
            template.wait_for_launcher()
        restore_s = _restore_and_ask(criu, images_dir, keys, work_dir / "restored.pid")
    except CriuFailed:
        # The error names the dump log, so only the images go.
        _remove_all_but_logs(work_dir)
        raise
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)

    result = SelfTestResult(dump_s * 1000, restore_s * 1000)
    log.info("criu self-test passed: dump %.0f ms, restore %.0f ms.", result.dump_ms, result.restore_ms)
    return result


def _remove_all_but_logs(work_dir: Path) -> None:
    for path in work_dir.rglob("*"):
        if path.is_file() and path.suffix != ".log":
            path.unlink()


def _restore_and_ask(criu: Criu, images_dir: Path, keys: dict[int, str], pidfile: Path) -> float:
    """Restore the tiny process, check its echo through the new pipes, end it; return seconds."""
    with ReplacementPipes() as pipes:
        started = time.monotonic()
        pid = criu.restore(
            images_dir, pidfile=pidfile, inherit_fds=pipes.inherit_fds(keys),
            timeout_s=SELFTEST_RESTORE_TIMEOUT_S,
        )
        restore_s = time.monotonic() - started
        try:
            pipes.close_child_ends()
            answer = exchange_line(pipes.stdin_write, pipes.stdout_read, b"ping\n", ANSWER_TIMEOUT_S)
        finally:
            procs.kill_and_wait(pid)
    if answer != b"ping\n":
        raise SelfTestError(
            f"The restored process (pid {pid}) echoed {answer!r} instead of b'ping\\n' within "
            f"{ANSWER_TIMEOUT_S:g} s, so criu did not reconnect its pipes."
        )
    return restore_s
