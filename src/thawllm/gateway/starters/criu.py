"""CRIU restore: a replica of a parked, warm template, serving within milliseconds."""

from __future__ import annotations

from pathlib import Path

from thawllm.gateway.source import Source
from thawllm.gateway.starters.base import Starter, StarterOptions, StarterUnavailable, StartError
from thawllm.supervisor.handle import InstanceError, InstanceHandle


class CriuStarter(Starter):
    """Restores replicas from a snapshot directory, taking the snapshot first for a model source."""

    name = "criu"

    def __init__(self, snapshot_dir: Path, manifest, criu):
        self.snapshot_dir = snapshot_dir
        self._manifest = manifest
        self._criu = criu

    @classmethod
    def create(cls, source: Source, options: StarterOptions) -> "CriuStarter":
        from thawllm.gateway.snapshot_cache import SnapshotCacheError, ensure_snapshot
        from thawllm.snapshot.criu import CriuError, privilege_problem
        from thawllm.snapshot.manifest import ManifestError
        from thawllm.snapshot.restore import prepare

        problem = privilege_problem()
        if problem is not None:
            raise StarterUnavailable(problem)
        try:
            snapshot_dir = source.snapshot_dir
            if snapshot_dir is None:
                snapshot_dir = ensure_snapshot(source, options.snapshot_cache, _find_criu())
            manifest, criu = prepare(snapshot_dir)
        except (CriuError, ManifestError, SnapshotCacheError, OSError) as exc:
            raise StarterUnavailable(str(exc)) from exc
        return cls(snapshot_dir, manifest, criu)

    def start(self, label: str, server_settings: dict) -> InstanceHandle:
        from thawllm.snapshot.criu import CriuError
        from thawllm.snapshot.restore import restore_replica

        try:
            handle, _seconds = restore_replica(self.snapshot_dir, server_settings, label,
                                               criu=self._criu, manifest=self._manifest)
        except (CriuError, InstanceError, OSError) as exc:
            raise StartError(f"Restore from {self.snapshot_dir} failed: {exc}") from exc
        return handle

    def describe(self) -> str:
        return f"restores of {self.snapshot_dir} with {self._criu.describe()}"


def _find_criu():
    from thawllm.snapshot.criu import Criu

    return Criu.find()
