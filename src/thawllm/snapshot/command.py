"""`thaw snapshot`: of a new template, or of a running `thaw serve --control` service."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

from thawllm.engine.base import EngineSettings

# The service finishes its in-flight requests before the dump, so allow for long generations.
CONTROL_REPLY_TIMEOUT_S = 900.0


def snapshot_command(args: argparse.Namespace, engine: EngineSettings | None) -> int:
    from thawllm.snapshot.create import SnapshotError, take_snapshot
    from thawllm.snapshot.criu import CriuError
    from thawllm.supervisor.handle import InstanceError

    try:
        if args.control:
            reply = request_live_snapshot(Path(args.control), args.output.absolute(), args.leave_running, args.force)
            print(reply["message"])
            return 0 if reply.get("ok") else 1
        if args.leave_running:
            raise SnapshotError("--leave-running needs --control: a new template always ends with its dump.")
        result = take_snapshot(engine, args.output, args.imports, force=args.force)
    except (SnapshotError, CriuError, InstanceError, OSError) as exc:
        print(f"thaw snapshot: error: {exc}", file=sys.stderr)
        return 1
    print(result.describe())
    return 0


def request_live_snapshot(path: Path, output: Path, leave_running: bool, force: bool) -> dict:
    """Ask the supervisor listening on control socket PATH to snapshot its service."""
    from thawllm.snapshot.create import SnapshotError

    request = {"command": "snapshot", "output": str(output), "leave_running": leave_running, "force": force}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(CONTROL_REPLY_TIMEOUT_S)
            client.connect(str(path))
            client.sendall(json.dumps(request).encode() + b"\n")
            reply = client.makefile("rb").readline()
    except OSError as exc:
        raise SnapshotError(f"Cannot reach the control socket {path}: {exc.strerror or exc}. "
                            "Is 'thaw serve --control PATH' running, and are you its owner?") from exc
    if not reply:
        raise SnapshotError(f"The service at {path} closed the control connection without a reply; see its log.")
    return json.loads(reply)
