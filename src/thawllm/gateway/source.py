"""The gateway's source: a snapshot directory, or a model to start or snapshot."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from thawllm.engine.base import EngineSettings


class SourceError(Exception):
    """SOURCE is neither a readable snapshot directory nor a GGUF model."""


@dataclass(frozen=True)
class Source:
    """The model and its settings, and the snapshot directory when SOURCE named one."""

    engine: EngineSettings
    imports: list[str] = field(default_factory=list)
    snapshot_dir: Path | None = None

    def describe(self) -> str:
        if self.snapshot_dir is not None:
            return f"snapshot {self.snapshot_dir} of {self.engine.model_path.name}"
        return f"model {self.engine.model_path}"


def resolve_source(args: argparse.Namespace) -> Source:
    """Build the Source of `thaw gateway SOURCE`; the bundled model when SOURCE is absent."""
    if args.source is not None and Path(args.source).expanduser().is_dir():
        return _snapshot_source(Path(args.source).expanduser().absolute())
    return _model_source(args)


def _snapshot_source(directory: Path) -> Source:
    from thawllm.snapshot.manifest import ManifestError, load_manifest

    try:
        manifest = load_manifest(directory)
        engine = manifest.engine_settings
    except (ManifestError, KeyError, TypeError) as exc:
        raise SourceError(f"Cannot use {directory} as a snapshot: {exc}") from exc
    return Source(engine, list(manifest.imports), directory)


def _model_source(args: argparse.Namespace) -> Source:
    from thawllm.instance.options import engine_settings_from
    from thawllm.models.files import ModelFileError, resolve_model

    try:
        model = resolve_model(args.source)
    except ModelFileError as exc:
        raise SourceError(f"{exc} SOURCE may also be a snapshot directory.") from exc
    return Source(engine_settings_from(args, model), list(args.imports))
