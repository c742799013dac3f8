"""Loopback ports: pick free ones, check that they are free again, find who listens."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

LOOPBACK = "127.0.0.1"
TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
TCP_LISTEN_STATE = "0A"


def free_port() -> int:
    """Return a port that nothing listens on now; the kernel picks it from its ephemeral range."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def port_is_free(port: int) -> bool:
    """Return True when nothing listens on PORT (a listener still draining counts as busy)."""
    return not listening_inodes(port)


def listening_inodes(port: int) -> set[str]:
    """Return the socket inodes in LISTEN state on PORT, from the kernel's TCP tables."""
    inodes = set()
    for table in TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == TCP_LISTEN_STATE:
                inodes.add(fields[9])
    return inodes


def listener_pid(port: int, candidates: Iterable[int]) -> int | None:
    """Return the pid among CANDIDATES that has the listening socket of PORT, if any.

    The kernel's TCP table names the socket's inode, and /proc/PID/fd links
    name the inodes each process has open, which ties a port to its process
    whatever tree or PID namespace the process lives in.
    """
    inodes = listening_inodes(port)
    if not inodes:
        return None
    socket_links = {f"socket:[{inode}]" for inode in inodes}
    for pid in candidates:
        if socket_links & _socket_links(pid):
            return pid
    return None


def _socket_links(pid: int) -> set[str]:
    fd_dir = f"/proc/{pid}/fd"
    links = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return links
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            links.add(target)
    return links
