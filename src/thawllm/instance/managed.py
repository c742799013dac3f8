"""An instance driven by a supervisor over its control pipes.

Life cycle: load and warm up, then park (no socket open) and wait for a
command. "serve" binds the port and serves until "park" (drain, close the
listener, park again), "exit", a signal, or the end of stdin, which means
the supervisor is gone. A parked instance is what a snapshot captures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from thawllm.instance import control
from thawllm.server.runner import BindError, ServingSession, bind_socket
from thawllm.server.settings import ServerSettings
from thawllm.snapshot import hooks

from thawllm.logs import pid_note

logger = logging.getLogger("thaw.instance")

COMPACT_TIMEOUT_S = 120.0
EVENTS_FD = 1
COMMANDS_FD = 0


class ManagedInstance:
    """The control loop of a supervised service process."""

    def __init__(self, app, config):
        self.app = app
        self.config = config
        self.service = app.state.service
        self.commands = control.LineReader(COMMANDS_FD)
        self.pending: list[bytes] = []
        self.session: ServingSession | None = None

    def emit(self, kind: str, **fields) -> None:
        os.write(EVENTS_FD, control.encode(kind, pid=os.getpid(), **fields))

    def next_command(self) -> dict | None:
        """Block until the supervisor sends a command; None when stdin closes."""
        while not self.pending:
            lines = self.commands.read_available()
            if lines is None:
                return None
            self.pending.extend(lines)
        return control.decode(self.pending.pop(0))

    def park(self) -> None:
        hooks.run_before_snapshot()
        self.service.release_scratch()
        released = self.service.worker.call(self.service.require_engine().compact, COMPACT_TIMEOUT_S)
        logger.info("Released %.1f MiB of unused memory before parking.", released / 2**20)
        self.emit(control.PARKED, load_seconds=self.service.engine.load_seconds)
        logger.info("Parked with no socket open%s.", pid_note())

    def run(self) -> int:
        self.park()
        while True:
            command = self.next_command()
            if command is None:
                logger.info("Control channel closed; exiting%s.", pid_note())
                return 0
            kind = command["type"]
            if kind == control.EXIT:
                return 0
            if kind == control.PARK:
                self.park()
            elif kind == control.SERVE:
                if self.serve(command) != "park":
                    return 0
                self.park()
            else:
                logger.error("Ignored unknown control command %r.", kind)

    def serve(self, command: dict) -> str:
        settings = ServerSettings.from_dict(command["settings"])
        restored = command.get("restored")
        if restored:
            self.after_restore(restored)
        self.service.apply_settings(settings)

        try:
            sock = bind_socket(settings.host, settings.port)
        except BindError as exc:
            logger.error("%s", exc)
            self.emit(control.FAILED, message=str(exc))
            return "park"

        host, port = sock.getsockname()[:2]
        started_at = restored["started_at"] if restored else None

        def on_started() -> None:
            self.emit(control.SERVING, host=host, port=port)
            if started_at is not None:
                elapsed_ms = (time.time() - started_at) * 1000
                logger.info("Restored from %s in %.0f ms%s.", restored["snapshot"], elapsed_ms, pid_note())
            logger.info("Serving on http://%s:%d%s.", host, port, pid_note())

        self.session = ServingSession(self.config, sock, on_started)
        reason = asyncio.run(self.session.serve(on_loop=self._watch_commands))
        self.session = None
        return reason

    def after_restore(self, restored: dict) -> None:
        self.service.reset_after_restore()
        hooks.run_after_restore()

    def _watch_commands(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(COMMANDS_FD, self._on_command_readable)

    def _on_command_readable(self) -> None:
        lines = self.commands.read_available()
        if lines is None:
            logger.info("Control channel closed; stopping%s.", pid_note())
            asyncio.get_running_loop().remove_reader(COMMANDS_FD)
            self.session.stop("exit")
            return
        for index, line in enumerate(lines):
            kind = control.decode(line)["type"]
            if kind in (control.PARK, control.EXIT):
                # Commands after this one wait until the session has ended.
                self.pending.extend(lines[index + 1:])
                asyncio.get_running_loop().remove_reader(COMMANDS_FD)
                if kind == control.PARK:
                    logger.info("Stopping for a snapshot: closing the listener and draining requests.")
                self.session.stop(kind)
                return
            logger.error("Ignored control command %r while serving.", kind)


def run_managed(app, config) -> int:
    """Run the control loop; stdout carries events only, so stray prints go to stderr."""
    sys.stdout = sys.stderr
    return ManagedInstance(app, config).run()
