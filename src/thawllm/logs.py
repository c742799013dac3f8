"""Logging set-up shared by every thaw process."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def pid_note() -> str:
    """Return " [pid N]" for log messages, or "" as PID 1 of a namespace, where the supervisor's
    prefix gives the pid that matters."""
    pid = os.getpid()
    return "" if pid == 1 else f" [pid {pid}]"


def configure_logging(level: str | None = None) -> None:
    """Send thaw's log records to stderr; THAW_LOG_LEVEL sets the default level."""
    level = level or os.environ.get("THAW_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root = logging.getLogger("thaw")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
