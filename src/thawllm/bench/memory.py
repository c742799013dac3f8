"""Memory figures of a process, read from /proc."""

from __future__ import annotations

from pathlib import Path

KIB = 1024


class MemoryReadError(Exception):
    """A process's memory figures could not be read."""


def peak_rss_bytes(pid: int) -> int:
    """Return the peak resident set size (VmHWM) of PID.

    A restored process's peak counts only from its restore, because the
    kernel does not carry the counter across a checkpoint.
    """
    return _status_kib(pid, "VmHWM") * KIB


def anonymous_rss_bytes(pid: int) -> int:
    """Return the resident anonymous memory (RssAnon) of PID: pages no other process can share."""
    return _status_kib(pid, "RssAnon") * KIB


def pss_bytes(pid: int) -> int:
    """Return the proportional set size of PID: shared pages count divided by their sharers."""
    path = Path(f"/proc/{pid}/smaps_rollup")
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise MemoryReadError(f"Cannot read {path}: {exc.strerror}. Is process {pid} still running?") from exc
    for line in lines:
        if line.startswith("Pss:"):
            return int(line.split()[1]) * KIB
    raise MemoryReadError(f"{path} has no Pss line; this kernel may lack smaps_rollup (Linux 4.14+).")


def available_bytes() -> int:
    """Return MemAvailable from /proc/meminfo: what new processes can use without swapping."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * KIB
    raise MemoryReadError("/proc/meminfo has no MemAvailable line.")


def total_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * KIB
    raise MemoryReadError("/proc/meminfo has no MemTotal line.")


def _status_kib(pid: int, field: str) -> int:
    path = Path(f"/proc/{pid}/status")
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise MemoryReadError(f"Cannot read {path}: {exc.strerror}. Is process {pid} still running?") from exc
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise MemoryReadError(f"{path} has no {field} line.")
