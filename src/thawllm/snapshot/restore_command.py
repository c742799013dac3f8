"""`thaw restore`: serve replicas restored from a snapshot until a signal stops them."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from thawllm.server.settings import MAX_PORT
from thawllm.snapshot.criu import CriuError
from thawllm.snapshot.manifest import ManifestError, load_manifest
from thawllm.supervisor.handle import InstanceError, InstanceHandle
from thawllm.supervisor.watch import SignalQueue, stop_all, supervise

logger = logging.getLogger("thaw.snapshot")


class RestoreUsageError(Exception):
    """The replica count or ports are invalid."""


def replica_ports(args: argparse.Namespace) -> list[int]:
    """Return one port per replica, all checked before any replica starts."""
    if args.replicas < 1:
        raise RestoreUsageError(f"--replicas must be 1 or more, not {args.replicas}.")
    if args.ports is None:
        ports = [args.port + index if args.port else 0 for index in range(args.replicas)]
    else:
        ports = _listed_ports(args.ports, args.replicas)
    for index, port in enumerate(ports, start=1):
        if not 0 <= port <= MAX_PORT:
            raise RestoreUsageError(f"Invalid port {port} for replica {index}: ports go from 0 to {MAX_PORT}. "
                                    "Pass another --port or --ports.")
    repeated = sorted({port for port in ports if port and ports.count(port) > 1})
    if repeated:
        raise RestoreUsageError(f"--ports lists port {repeated[0]} more than once. Give each replica its own port.")
    return ports


def _listed_ports(listed: str, replicas: int) -> list[int]:
    try:
        ports = [int(port) for port in listed.split(",")]
    except ValueError as exc:
        raise RestoreUsageError(f"--ports must be comma-separated integers, not {listed!r}.") from exc
    if len(ports) != replicas and replicas != 1:
        raise RestoreUsageError(f"--ports lists {len(ports)} ports but --replicas is {replicas}.")
    return ports


def restore_command(args: argparse.Namespace, settings) -> int:
    try:
        ports = replica_ports(args)
    except RestoreUsageError as exc:
        print(f"thaw restore: error: {exc}", file=sys.stderr)
        return 2

    signals = SignalQueue()
    handles: list[InstanceHandle] = []
    try:
        start = _restore_starter(args)
        for index, port in enumerate(ports, start=1):
            if signals.received:
                break
            replica_settings = replace(settings, port=port).to_dict()
            handle, seconds = start(replica_settings, f"replica {index}")
            handles.append(handle)
            # One write per line, because replica logs share the terminal.
            sys.stdout.write(f"Replica {index} ready on http://{settings.host}:{handle.port} "
                             f"in {seconds * 1000:.0f} ms [pid {handle.pid}]\n")
            sys.stdout.flush()
    except (ManifestError, CriuError, InstanceError, OSError) as exc:
        print(f"thaw restore: error: {exc}", file=sys.stderr)
        stop_all(handles)
        return 1
    return supervise(handles, signals)


def _restore_starter(args: argparse.Namespace):
    """Return a function that starts one replica: by restore, or cold if allowed and needed."""
    from thawllm.snapshot.restore import prepare, restore_replica

    try:
        manifest, criu = prepare(args.snapshot, verify_hash=args.verify)
    except (ManifestError, CriuError) as exc:
        if args.fallback != "cold":
            raise
        return _cold_starter(args, exc)
    return lambda settings, label: restore_replica(args.snapshot, settings, label, criu=criu, manifest=manifest)


def _cold_starter(args: argparse.Namespace, reason: Exception):
    from thawllm.models.files import ModelFileError, check_model_file
    from thawllm.supervisor.cold import start_cold

    manifest = load_manifest(args.snapshot)
    engine = manifest.engine_settings
    try:
        check_model_file(engine.model_path)
    except ModelFileError as exc:
        raise ManifestError(f"{reason} The cold fallback cannot start either: {exc}") from exc
    logger.warning("%s Starting cold instances instead (--fallback cold).", reason)
    return lambda settings, label: start_cold(engine, manifest.imports, settings, label)
