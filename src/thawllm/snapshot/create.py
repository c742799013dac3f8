"""Take snapshots: of a fresh template, or of a running service through its control socket."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from thawllm.engine.base import EngineSettings
from thawllm.instance import control
from thawllm.instance.options import engine_arguments
from thawllm.snapshot.criu import Criu
from thawllm.snapshot.manifest import IMAGES_DIR_NAME, MANIFEST_NAME, build_manifest, sha256_of, write_manifest
from thawllm.supervisor.handle import InstanceHandle

logger = logging.getLogger("thaw.snapshot")

# Loading a 7B model from a cold page cache can take minutes on a slow disk.
TEMPLATE_READY_TIMEOUT_S = 900.0


class SnapshotError(Exception):
    """A snapshot could not be taken; nothing was left behind."""


@dataclass
class SnapshotResult:
    directory: str
    size_bytes: int
    dump_seconds: float
    total_seconds: float

    def describe(self) -> str:
        return (f"Snapshot written to {self.directory}: {self.size_bytes / 2**20:.1f} MiB, "
                f"dumped in {self.dump_seconds * 1000:.0f} ms, {self.total_seconds:.2f} s in all.")

    def to_dict(self) -> dict:
        return asdict(self)


def check_output(output: Path, force: bool) -> None:
    """Raise SnapshotError unless OUTPUT can take a new snapshot; FORCE allows replacing an old one."""
    if output.name in ("", ".", ".."):
        raise SnapshotError(f"Invalid snapshot directory {output}: pass -o with the name of a new directory, "
                            "such as snapshots/smollm2.")
    try:
        exists = output.exists() or output.is_symlink()
    except OSError as exc:
        raise SnapshotError(f"Invalid snapshot directory {output}: {exc.strerror}. Pass another -o.") from exc
    if exists:
        if not force:
            raise SnapshotError(f"Snapshot directory already exists: {output}. "
                                "Pass --force to replace it or choose another -o.")
        if not is_replaceable(output):
            raise SnapshotError(f"{output} exists and is not a snapshot directory (no {MANIFEST_NAME} and no criu "
                                "images in it), so --force does not replace it. Choose another -o.")
    if not output.parent.is_dir():
        raise SnapshotError(f"Parent directory does not exist: {output.parent}. Create it first.")


def is_replaceable(directory: Path) -> bool:
    """Return True for a real directory that is empty or contains a snapshot, even a damaged one."""
    if directory.is_symlink() or not directory.is_dir():
        return False
    return ((directory / MANIFEST_NAME).is_file() or (directory / IMAGES_DIR_NAME / "inventory.img").is_file()
            or not any(directory.iterdir()))


def take_snapshot(engine: EngineSettings, output: Path, imports: list[str] = (), force: bool = False,
                  criu: Criu | None = None) -> SnapshotResult:
    """Start a template of ENGINE's model, let it warm up and park, and dump it to OUTPUT."""
    output = output.absolute()
    check_output(output, force)
    criu = criu or Criu.find()
    started = time.perf_counter()
    handle = InstanceHandle.spawn(engine_arguments(engine, list(imports)), "template", new_pid_namespace=True)
    try:
        handle.wait_event(control.PARKED, TEMPLATE_READY_TIMEOUT_S)
        return dump_instance(handle, engine, list(imports), output, criu, started,
                             leave_running=False, force=force)
    finally:
        if handle.alive():
            handle.kill()
        handle.poll()
        handle.close()


def dump_instance(handle: InstanceHandle, engine: EngineSettings, imports: list[str], output: Path,
                  criu: Criu, started: float, leave_running: bool, force: bool) -> SnapshotResult:
    """Dump the parked instance HANDLE into OUTPUT, written whole or not at all.

    The image contains process memory such as API keys and prompts, so the
    directory is private to its owner (0700, files 0600).
    """
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    previous_umask = os.umask(0o077)
    try:
        _make_partial(partial)
        pipes = handle.pipe_inodes()
        digest = sha256_of(engine.model_path)
        dump_seconds = criu.dump(handle.pid, partial / IMAGES_DIR_NAME, leave_running=leave_running)
        write_manifest(build_manifest(engine, criu.version, pipes, imports, digest), partial)
        _make_private(partial)
        if output.exists() and force:
            shutil.rmtree(output)
        os.rename(partial, output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        os.umask(previous_umask)

    size = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
    result = SnapshotResult(str(output), size, dump_seconds, time.perf_counter() - started)
    logger.info("%s", result.describe())
    return result


def _make_partial(partial: Path) -> None:
    try:
        partial.mkdir(mode=0o700)
    except OSError as exc:
        raise SnapshotError(f"Cannot create the snapshot directory in {partial.parent}: {exc.strerror}. "
                            "Choose an -o in a writable directory.") from exc


def _make_private(directory: Path) -> None:
    os.chmod(directory, 0o700)
    for path in directory.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
