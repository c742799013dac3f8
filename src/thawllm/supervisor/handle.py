"""A service process under supervision, reached through its control pipes."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from thawllm.instance import control

logger = logging.getLogger("thaw.supervisor")

STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0


class InstanceError(Exception):
    """A service process failed to start, exited, or reported a failure."""


class InstanceHandle:
    """The pid and control pipes of one service process.

    The process may be our child (spawned) or an adopted orphan (restored by
    criu and reparented to us as the child subreaper). Either way it is
    waited for by pid.
    """

    def __init__(self, pid: int, command_fd: int, event_fd: int, log_fd: int, label: str,
                 launcher: subprocess.Popen | None = None):
        self.pid = pid
        self.label = label
        self.launcher = launcher
        self._command_fd = command_fd
        self._events = control.LineReader(event_fd)
        self._pending: list[bytes] = []
        self.returncode: int | None = None
        self.port: int | None = None
        self._log_thread = threading.Thread(
            target=_forward_log, args=(log_fd, self), name=f"log-{label}", daemon=True
        )
        self._log_thread.start()

    # Spawning

    @classmethod
    def spawn(cls, arguments: list[str], label: str, new_pid_namespace: bool,
              env: dict | None = None) -> "InstanceHandle":
        """Start `python -m thawllm.instance ARGUMENTS` with pipes for stdin, stdout and stderr.

        In a new PID namespace the instance is PID 1 there, which lets many
        replicas restored from its snapshot run side by side.
        """
        command = [sys.executable, "-m", "thawllm.instance", *arguments]
        if new_pid_namespace:
            command = [sys.executable, "-m", "thawllm.supervisor.pidns", *command, "--new-session"]
        command_read, command_write = os.pipe()
        event_read, event_write = os.pipe()
        log_read, log_write = os.pipe()
        try:
            launcher = subprocess.Popen(command, stdin=command_read, stdout=event_write,
                                        stderr=log_write, env=env)
        except OSError:
            for fd in (command_write, event_read, log_read):
                os.close(fd)
            raise
        finally:
            for fd in (command_read, event_write, log_write):
                os.close(fd)
        handle = cls(launcher.pid, command_write, event_read, log_read, label=label, launcher=launcher)
        if new_pid_namespace:
            try:
                handle.pid = _namespace_child(launcher)
            except BaseException:
                # Also on Ctrl-C or SIGTERM, so that the launcher does not go on to start an instance.
                _end_launcher(launcher)
                handle.close()
                raise
        return handle

    # Control

    def send(self, kind: str, **fields) -> None:
        try:
            os.write(self._command_fd, control.encode(kind, **fields))
        except OSError as exc:
            raise InstanceError(f"{self.label} [pid {self.pid}] control pipe is closed: {exc.strerror}") from exc

    def wait_event(self, expected: str, timeout_s: float) -> dict:
        """Wait for event EXPECTED; raise InstanceError on a failure, an exit or a timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = self._next_event(deadline)
            if event is None:
                self.poll()
                raise InstanceError(
                    f"{self.label} [pid {self.pid}] exited before it was {expected}"
                    f" (exit status {self.returncode}); see its log above"
                )
            if event["type"] == control.FAILED:
                raise InstanceError(f"{self.label} [pid {self.pid}] failed: {event.get('message')}")
            if event["type"] == expected:
                return event
            logger.debug("%s sent %s while waiting for %s.", self.label, event["type"], expected)

    def _next_event(self, deadline: float) -> dict | None:
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InstanceError(f"{self.label} [pid {self.pid}] timed out before its next event")
            readable, _, _ = select.select([self._events.fd], [], [], remaining)
            if readable:
                lines = self._events.read_available()
                if lines is None:
                    return None
                self._pending.extend(lines)
        return control.decode(self._pending.pop(0))

    def serve(self, settings: dict, timeout_s: float, restored: dict | None = None) -> dict:
        """Tell a parked instance to bind and serve; return its SERVING event."""
        self.send(control.SERVE, settings=settings, restored=restored)
        event = self.wait_event(control.SERVING, timeout_s)
        self.port = event["port"]
        return event

    def event_fd(self) -> int:
        return self._events.fd

    def pipe_inodes(self) -> dict[str, str]:
        """Return criu's keys ('pipe:[inode]') of the instance's stdin, stdout and stderr."""
        return {name: os.readlink(f"/proc/{self.pid}/fd/{fd}")
                for fd, name in enumerate(("stdin", "stdout", "stderr"))}

    # Life and death

    def poll(self) -> int | None:
        """Return the exit status if the process has ended, reaping it; None while it runs."""
        if self.returncode is not None:
            return self.returncode
        if self.launcher is not None and self.launcher.pid != self.pid:
            # The instance is the launcher's child in its namespace; it ends with it.
            code = self.launcher.poll()
            if code is None and not _pid_alive(self.pid):
                code = self.launcher.wait(timeout=KILL_TIMEOUT_S)
        elif self.launcher is not None:
            code = self.launcher.poll()
        else:
            code = _reap(self.pid)
        self.returncode = code
        return code

    def alive(self) -> bool:
        return self.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Ask the instance to exit, then escalate to SIGTERM and SIGKILL."""
        if not self.alive():
            return self.returncode
        try:
            self.send(control.EXIT)
        except InstanceError:
            pass
        if self._wait(timeout_s):
            return self.returncode
        return self.kill()

    def kill(self) -> int | None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                break
            _signal(self.pid, sig)
            if self._wait(KILL_TIMEOUT_S):
                break
        self.close()
        return self.returncode

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Close our ends of the control pipes."""
        for fd in (self._command_fd, self._events.fd):
            if fd >= 0:
                os.close(fd)
        self._command_fd = self._events.fd = -1


def _namespace_child(launcher: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """Return the pid of the process that the PID-namespace launcher started, as seen from here."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = _children(launcher.pid)
        if children:
            return children[0]
        if launcher.poll() is not None:
            raise InstanceError(f"The PID-namespace launcher exited with status {launcher.returncode} "
                                "before starting the instance; see its log above")
        time.sleep(0.002)
    launcher.kill()
    launcher.wait()
    raise InstanceError(f"The PID-namespace launcher [pid {launcher.pid}] started no child within {timeout_s} s")


def _end_launcher(launcher: subprocess.Popen) -> None:
    """Kill the PID-namespace launcher and the instance that it may have started, by pid."""
    if launcher.poll() is None:
        # A stopped launcher cannot fork between the look at its children and the kill.
        _signal(launcher.pid, signal.SIGSTOP)
        for child in _children(launcher.pid):
            _signal(child, signal.SIGKILL)
        launcher.kill()
    launcher.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _forward_log(fd: int, handle: InstanceHandle) -> None:
    """Copy the instance's stderr lines to ours, prefixed with its label and pid, until it closes."""
    with open(fd, "rb", buffering=0, closefd=True) as stream:
        for line in iter(stream.readline, b""):
            sys.stderr.write(f"[{handle.label} pid {handle.pid}] {line.decode('utf-8', 'replace')}")
            sys.stderr.flush()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        # The read fails with ESRCH when the process is reaped between open and read.
        return False


def _reap(pid: int) -> int | None:
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if _pid_alive(pid) else -1
    if reaped == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
