"""Restore serving replicas from a snapshot."""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import time
from pathlib import Path

from thawllm.snapshot.criu import Criu
from thawllm.snapshot.manifest import IMAGES_DIR_NAME, Manifest, check_manifest, load_manifest
from thawllm.supervisor.handle import InstanceHandle

logger = logging.getLogger("thaw.snapshot")

PR_SET_CHILD_SUBREAPER = 36
# A restored replica only binds its socket, but a loaded machine may delay it.
SERVE_TIMEOUT_S = 60.0


def become_subreaper() -> None:
    """Adopt orphaned descendants, so restored replicas become our children once criu exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(errno)}")


def prepare(snapshot_dir: Path, verify_hash: bool = False) -> tuple[Manifest, Criu]:
    """Load and check the manifest once for any number of replicas."""
    manifest = load_manifest(snapshot_dir)
    criu = Criu.find()
    check_manifest(manifest, criu.version, verify_hash)
    images = Path(snapshot_dir) / IMAGES_DIR_NAME
    if not images.is_dir():
        from thawllm.snapshot.manifest import ManifestError

        raise ManifestError(f"{snapshot_dir} has no {IMAGES_DIR_NAME}/ directory. Take the snapshot again.")
    return manifest, criu


def restore_replica(snapshot_dir: Path, settings: dict, label: str, *,
                    criu: Criu | None = None, manifest: Manifest | None = None) -> tuple[InstanceHandle, float]:
    """Restore one replica and have it serve with SETTINGS; return it and the seconds it took.

    New pipes take the place of the template's control pipes (criu's
    --inherit-fd), and the settings travel over them after the restore.
    """
    started, wall_clock = time.perf_counter(), time.time()
    snapshot_dir = Path(snapshot_dir).absolute()
    if manifest is None or criu is None:
        manifest, criu = prepare(snapshot_dir)
    become_subreaper()

    handle = _restore_process(snapshot_dir, manifest, criu, label)
    try:
        handle.serve(settings, SERVE_TIMEOUT_S,
                     restored={"snapshot": str(snapshot_dir), "started_at": wall_clock})
    except BaseException:
        # Also on Ctrl-C or SIGTERM, so that no half-started instance outlives us.
        handle.kill()
        raise
    return handle, time.perf_counter() - started


def _restore_process(snapshot_dir: Path, manifest: Manifest, criu: Criu, label: str) -> InstanceHandle:
    command_read, command_write = os.pipe()
    event_read, event_write = os.pipe()
    log_read, log_write = os.pipe()
    child_ends = (command_read, event_write, log_write)
    inherit = {
        command_read: manifest.pipes["stdin"],
        event_write: manifest.pipes["stdout"],
        log_write: manifest.pipes["stderr"],
    }
    with tempfile.TemporaryDirectory(prefix="thaw-restore-") as work:
        try:
            pid = criu.restore(snapshot_dir / IMAGES_DIR_NAME, pidfile=Path(work) / "pid", inherit_fds=inherit)
        except BaseException:
            for fd in (command_write, event_read, log_read):
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
    return InstanceHandle(pid, command_write, event_read, log_read, label=label)
