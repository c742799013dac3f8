"""`thaw serve --control PATH`: a service that can be snapshotted while it serves.

The service runs as a supervised instance, PID 1 of its own PID namespace,
so that its snapshot restores like any other. The supervisor listens on a
Unix socket (mode 0600) for one-line JSON commands. Any process that can
reach that socket can make the service dump its memory, so commands that
are not understood are rejected and logged.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import stat
import time
from pathlib import Path

from thawllm.engine.base import EngineSettings
from thawllm.instance import control
from thawllm.instance.options import engine_arguments
from thawllm.snapshot.create import SnapshotError, check_output, dump_instance
from thawllm.snapshot.criu import Criu, CriuError
from thawllm.supervisor.handle import InstanceError, InstanceHandle
from thawllm.supervisor.watch import SignalQueue, stop_all

logger = logging.getLogger("thaw.supervisor")

LOAD_TIMEOUT_S = 900.0
SERVE_TIMEOUT_S = 60.0
# In-flight requests finish before the dump; a long generation may take this long.
DRAIN_TIMEOUT_S = 600.0
CONTROL_READ_TIMEOUT_S = 5.0
MAX_COMMAND_BYTES = 65536
POLL_INTERVAL_S = 0.5
SHOWN_VALUE_CHARS = 80


class LiveService:
    """A supervised service plus its management socket."""

    def __init__(self, engine: EngineSettings, settings, imports: list[str], control_path: Path):
        self.engine = engine
        self.settings = settings
        self.imports = imports
        self.control_path = control_path
        self.handle: InstanceHandle | None = None

    def start(self) -> None:
        self.handle = InstanceHandle.spawn(engine_arguments(self.engine, self.imports), "service",
                                           new_pid_namespace=True)
        self.handle.wait_event(control.PARKED, LOAD_TIMEOUT_S)
        self.handle.serve(self.settings.to_dict(), SERVE_TIMEOUT_S)

    def handle_command(self, request: dict) -> tuple[dict, bool]:
        """Run one control command; return the reply and whether the service has ended."""
        command = request.get("command")
        if command == "status":
            return {"ok": True, "pid": self.handle.pid, "port": self.handle.port,
                    "message": f"Serving on port {self.handle.port} [pid {self.handle.pid}]."}, False
        if command == "snapshot":
            return self.snapshot(request)
        logger.warning("Rejected control command %r on %s.", command, self.control_path)
        return {"ok": False, "message": f"Unknown control command {command!r}; expected 'snapshot' or 'status'."}, False

    def snapshot(self, request: dict) -> tuple[dict, bool]:
        started = time.perf_counter()
        try:
            output, leave_running, force = read_snapshot_request(request)
            check_output(output, force)
            criu = Criu.find()
        except (SnapshotError, CriuError, OSError) as exc:
            logger.warning("Rejected a snapshot command on %s: %s", self.control_path, exc)
            return {"ok": False, "message": str(exc)}, False

        logger.info("Snapshot requested: stopping the listener and draining in-flight requests.")
        self.handle.send(control.PARK)
        self.handle.wait_event(control.PARKED, DRAIN_TIMEOUT_S)
        try:
            result = dump_instance(self.handle, self.engine, self.imports, output, criu, started,
                                   leave_running=leave_running, force=force)
        except (SnapshotError, CriuError, OSError) as exc:
            logger.error("Snapshot failed: %s; serving again.", exc)
            self.handle.serve(self.settings.to_dict(), SERVE_TIMEOUT_S)
            return {"ok": False, "message": f"Snapshot failed: {exc}"}, False

        if not leave_running:
            self.handle.poll()
            return {"ok": True, "message": result.describe() + " The service has exited.", **result.to_dict()}, True
        self.handle.serve(self.settings.to_dict(), SERVE_TIMEOUT_S)
        return {"ok": True, "message": result.describe() + " The service goes on serving.", **result.to_dict()}, False


def read_snapshot_request(request: dict) -> tuple[Path, bool, bool]:
    """Return the output path, leave_running and force of a snapshot command; raise SnapshotError if invalid."""
    output = request.get("output")
    if not isinstance(output, str) or not os.path.isabs(output):
        raise SnapshotError(f"Invalid 'output' {_shorten(output)}: send the absolute path of the snapshot directory.")
    try:
        os.fsencode(output)
    except UnicodeEncodeError:
        raise SnapshotError(f"Invalid 'output' {_shorten(output)}: it is not a valid file name.") from None
    if "\0" in output:
        raise SnapshotError(f"Invalid 'output' {_shorten(output)}: it contains a NUL character.")
    leave_running = request.get("leave_running")
    if not isinstance(leave_running, bool):
        raise SnapshotError(f"Invalid 'leave_running' {_shorten(leave_running)}: send true or false.")
    force = request.get("force")
    if force is not None and not isinstance(force, bool):
        raise SnapshotError(f"Invalid 'force' {_shorten(force)}: send true, false or nothing.")
    return Path(output), leave_running, bool(force)


def _shorten(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def open_control_socket(path: Path) -> socket.socket:
    """Listen on PATH with mode 0600; a stale socket file from a dead supervisor is replaced."""
    if path.exists() or path.is_symlink():
        _remove_stale_socket(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    except OSError as exc:
        listener.close()
        raise SnapshotError(f"Cannot listen on the control socket {path}: {exc.strerror or exc}. "
                            "Pass another --control path.") from exc
    finally:
        os.umask(previous_umask)
    os.chmod(path, 0o600)
    listener.listen(4)
    return listener


def _remove_stale_socket(path: Path) -> None:
    """Delete the socket file at PATH if no one listens on it; anything else is left alone."""
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise SnapshotError(f"{path} exists and is not a socket. Pass another --control path.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
    else:
        raise SnapshotError(f"Control socket {path} is in use by another service. Pass another --control path.")
    finally:
        probe.close()


def _read_request(connection: socket.socket) -> dict | None:
    """Read one line, all of it within CONTROL_READ_TIMEOUT_S; None if it is not a JSON object.

    The deadline covers the whole line, because the supervisor acts on signals
    and watches its service only between connections.
    """
    deadline = time.monotonic() + CONTROL_READ_TIMEOUT_S
    data = b""
    while b"\n" not in data and len(data) < MAX_COMMAND_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete command within {CONTROL_READ_TIMEOUT_S:g} s")
        connection.settimeout(remaining)
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    try:
        request = json.loads(data.split(b"\n", 1)[0])
    except (ValueError, RecursionError):
        # ValueError covers invalid UTF-8 and invalid JSON; RecursionError, JSON nested too deeply.
        return None
    return request if isinstance(request, dict) else None


def serve_with_control(engine: EngineSettings, settings, control_path: Path, imports: list[str]) -> int:
    control_path = control_path.absolute()
    signals = SignalQueue()
    listener = open_control_socket(control_path)
    service = LiveService(engine, settings, imports, control_path)
    try:
        service.start()
        logger.info("Control socket listening at %s.", control_path)
        return _supervise(service, listener, signals)
    except InstanceError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        listener.close()
        control_path.unlink(missing_ok=True)
        if service.handle is not None:
            stop_all([service.handle])


def _supervise(service: LiveService, listener: socket.socket, signals: SignalQueue) -> int:
    while not signals.received:
        readable, _, _ = select.select([listener], [], [], POLL_INTERVAL_S)
        if not service.handle.alive():
            logger.error("service [pid %d] exited with status %s.", service.handle.pid, service.handle.returncode)
            return 1
        if not readable:
            continue
        connection, _ = listener.accept()
        with connection:
            if _answer(service, connection):
                return 0
    return 0


def _answer(service: LiveService, connection: socket.socket) -> bool:
    """Read one control request and send its reply; return True when the service has ended."""
    try:
        request = _read_request(connection)
    except OSError as exc:
        logger.warning("Control connection failed: %s.", exc)
        return False
    if request is None:
        logger.warning("Rejected a control message that is not a JSON object on %s.", service.control_path)
        reply, ended = {"ok": False, "message": "Control messages are one JSON object per line."}, False
    else:
        reply, ended = service.handle_command(request)
    try:
        connection.sendall(json.dumps(reply).encode() + b"\n")
    except OSError as exc:
        logger.warning("Could not send the control reply: %s.", exc)
    return ended
