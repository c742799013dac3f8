"""Find and end processes by pid through /proc, for cleanup after criu and self-tests."""

from __future__ import annotations

import logging
import os
import select
import signal
from pathlib import Path

log = logging.getLogger("thaw.snapshot")

PROC = Path("/proc")
EXIT_WAIT_TIMEOUT_S = 5.0


def parent_pid(pid: int) -> int | None:
    """Return the parent pid of `pid`, or None when the process is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name in field 2 may contain spaces and brackets, so the
    # fields after it are counted from the last closing bracket.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


def child_pids(pid: int) -> list[int]:
    """Return the pids whose parent is `pid`, by scanning /proc.

    /proc/PID/task/TID/children would be cheaper but needs CONFIG_PROC_CHILDREN,
    which not every kernel has.
    """
    children = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == pid:
            children.append(int(entry.name))
    return sorted(children)


def descendant_pids(pid: int) -> list[int]:
    """Return every descendant of `pid`, parents before their children."""
    found = []
    pending = child_pids(pid)
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending.extend(child_pids(child))
    return found


def is_running(pid: int) -> bool:
    """Return True when `pid` exists and is not a zombie."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return False
    state_line = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state_line


def kill_and_wait(pid: int, timeout_s: float = EXIT_WAIT_TIMEOUT_S) -> bool:
    """Send SIGKILL to `pid` and wait until it has exited; return False on timeout.

    A zombie child of ours counts as exited, and the caller must reap it.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return kill_pidfd_and_wait(pidfd, timeout_s)
    finally:
        os.close(pidfd)


def kill_pidfd_and_wait(pidfd: int, timeout_s: float = EXIT_WAIT_TIMEOUT_S) -> bool:
    """Send SIGKILL through `pidfd` and wait until the process has exited.

    A pidfd cannot reach another process that reused the pid, and it becomes
    readable when the process exits even if it is not our child.
    """
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    readable, _, _ = select.select([pidfd], [], [], timeout_s)
    if not readable:
        log.error("Process behind pidfd %d did not exit within %.1f s of SIGKILL.", pidfd, timeout_s)
    return bool(readable)
