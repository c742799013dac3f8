"""The control channel between a supervisor and an instance: JSON lines over pipes.

The instance reads commands on its stdin and writes events on its stdout; its
stderr carries log lines. A snapshot records the inodes of these pipes, so a
restore can connect new pipes in their place with criu's --inherit-fd.
"""

from __future__ import annotations

import json
import os

# Commands, supervisor to instance.
SERVE = "serve"
PARK = "park"
EXIT = "exit"

# Events, instance to supervisor.
PARKED = "parked"
SERVING = "serving"
STOPPED = "stopped"
FAILED = "failed"

MAX_MESSAGE_BYTES = 1 << 20


class ControlError(Exception):
    """A control message was malformed or the channel closed unexpectedly."""


def encode(kind: str, **fields) -> bytes:
    return (json.dumps({"type": kind, **fields}) + "\n").encode("utf-8")


def decode(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(f"Control message is not JSON: {line[:200]!r}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ControlError(f"Control message has no 'type' field: {line[:200]!r}")
    return message


class LineReader:
    """Split bytes read from a file descriptor into lines, without buffering ahead."""

    def __init__(self, fd: int):
        self.fd = fd
        self._buffer = b""

    def read_available(self) -> list[bytes] | None:
        """Read once from the fd; return complete lines, or None at end of file."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        self._buffer += chunk
        if len(self._buffer) > MAX_MESSAGE_BYTES:
            raise ControlError(f"Control message longer than {MAX_MESSAGE_BYTES} bytes")
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line for line in lines if line.strip()]
