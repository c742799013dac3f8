"""Snapshots that the gateway makes from a model, kept in a cache directory for the next start.

A cached snapshot is named after the model and a hash of everything that
makes it valid: the model's path, size and modification time, the engine
settings, the imported modules and thaw's version. A change to any of them
gives a new name, so an edited model or new settings lead to a new snapshot.
Before a cached snapshot is reused, its manifest is checked against this
machine's CPU and criu as well.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from thawllm import __version__
from thawllm.gateway.source import Source

logger = logging.getLogger("thaw.gateway")

CACHE_ENV = "XDG_CACHE_HOME"
KEY_HEX_DIGITS = 16


class SnapshotCacheError(Exception):
    """The gateway could not make or reuse a snapshot of its model."""


def default_cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache")
    return Path(base) / "thaw" / "snapshots"


def snapshot_key(source: Source) -> str:
    model = source.engine.model_path
    stat = model.stat()
    identity = {
        "model": str(model), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "engine": source.engine.to_dict(), "imports": source.imports, "thaw": __version__,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", model.stem)
    return f"{stem}-{digest[:KEY_HEX_DIGITS]}"


def ensure_snapshot(source: Source, cache_root: Path, criu) -> Path:
    """Return a snapshot of SOURCE's model in CACHE_ROOT that restores here, taking it if needed."""
    from thawllm.snapshot.create import SnapshotError, take_snapshot
    from thawllm.snapshot.criu import CriuError
    from thawllm.supervisor.handle import InstanceError

    directory = cache_root / snapshot_key(source)
    reuse_problem = _reuse_problem(directory, criu)
    if reuse_problem is None:
        logger.info("Reusing the cached snapshot %s.", directory)
        return directory
    logger.info("Taking a snapshot of %s into %s (%s).", source.engine.model_path, directory, reuse_problem)
    try:
        cache_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        take_snapshot(source.engine, directory, source.imports, force=directory.exists(), criu=criu)
    except (SnapshotError, CriuError, InstanceError, OSError) as exc:
        # Another gateway may have put the same snapshot in place meanwhile.
        if _reuse_problem(directory, criu) is None:
            logger.info("Using the snapshot %s that another process made meanwhile.", directory)
            return directory
        raise SnapshotCacheError(f"Could not snapshot {source.engine.model_path} into {directory}: {exc}") from exc
    return directory


def _reuse_problem(directory: Path, criu) -> str | None:
    """Return why the cached snapshot cannot be restored here, or None when it can."""
    from thawllm.snapshot.manifest import ManifestError, check_manifest, load_manifest

    if not directory.exists():
        return "no cached snapshot yet"
    try:
        check_manifest(load_manifest(directory), criu.version, verify_hash=False)
    except ManifestError as exc:
        return f"the cached one is not usable: {exc}"
    return None
