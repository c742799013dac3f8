"""snapshot.json: what a snapshot was made from, where, and with what."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from thawllm import __version__
from thawllm.engine.base import EngineSettings

FORMAT_VERSION = 1
MANIFEST_NAME = "snapshot.json"
IMAGES_DIR_NAME = "images"
HASH_CHUNK_BYTES = 1 << 20


class ManifestError(Exception):
    """A snapshot directory is missing, damaged, or was made for another machine or model."""


class ManifestMismatch(ManifestError):
    """The snapshot does not match this machine or its model file."""

    def __init__(self, field: str, snapshot_value, here_value, advice: str):
        self.field = field
        super().__init__(
            f"Snapshot field {field!r} does not match: the snapshot has {snapshot_value!r}, "
            f"this machine has {here_value!r}. {advice}"
        )


@dataclass
class Manifest:
    values: dict

    @property
    def engine_settings(self) -> EngineSettings:
        return EngineSettings.from_dict(self.values["engine"])

    @property
    def pipes(self) -> dict[str, str]:
        return self.values["control_pipes"]

    @property
    def imports(self) -> list[str]:
        return self.values.get("imports", [])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cpu_info() -> tuple[str, list[str]]:
    """Return this CPU's model name and feature flags from /proc/cpuinfo."""
    model, flags = platform.processor() or "unknown", []
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    return model, sorted(flags)


def build_manifest(engine: EngineSettings, criu_version: str, pipes: dict[str, str],
                   imports: list[str], model_sha256: str) -> Manifest:
    model_stat = engine.model_path.stat()
    cpu_model, cpu_flags = cpu_info()
    return Manifest({
        "format_version": FORMAT_VERSION,
        "thaw_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "path": str(engine.model_path),
            "size": model_stat.st_size,
            "mtime_ns": model_stat.st_mtime_ns,
            "sha256": model_sha256,
        },
        "engine": engine.to_dict(),
        "imports": imports,
        "cpu": {"model": cpu_model, "flags": cpu_flags},
        "kernel": platform.release(),
        "criu_version": criu_version,
        "control_pipes": pipes,
    })


def write_manifest(manifest: Manifest, directory: Path) -> None:
    path = directory / MANIFEST_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(manifest.values, file, indent=2)
        file.write("\n")


def load_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{directory} is not a snapshot: {MANIFEST_NAME} is missing. "
            "Make one with 'thaw snapshot -o DIR'."
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} cannot be read as JSON ({exc}). Take the snapshot again.") from exc
    _check_shape(values, path)
    return Manifest(values)


def _check_shape(values, path: Path) -> None:
    required = ("format_version", "model", "engine", "cpu", "criu_version", "control_pipes")
    if not isinstance(values, dict) or any(key not in values for key in required):
        raise ManifestError(f"{path} is incomplete: it needs the fields {', '.join(required)}. Take the snapshot again.")
    if values["format_version"] != FORMAT_VERSION:
        raise ManifestMismatch("format_version", values["format_version"], FORMAT_VERSION,
                               "Take the snapshot again with this version of thaw.")


def check_manifest(manifest: Manifest, criu_version: str, verify_hash: bool) -> None:
    """Raise ManifestMismatch unless the model file, CPU and criu match the snapshot's."""
    model = manifest.values["model"]
    path = Path(model["path"])
    retake = "Take a new snapshot here or pass --fallback cold."
    try:
        stat = path.stat()
    except OSError as exc:
        raise ManifestMismatch("model.path", model["path"], f"missing ({exc.strerror})", retake) from exc
    if stat.st_size != model["size"]:
        raise ManifestMismatch("model.size", model["size"], stat.st_size, retake)
    if stat.st_mtime_ns != model["mtime_ns"]:
        raise ManifestMismatch("model.mtime_ns", model["mtime_ns"], stat.st_mtime_ns, retake)
    if verify_hash:
        digest = sha256_of(path)
        if digest != model["sha256"]:
            raise ManifestMismatch("model.sha256", model["sha256"], digest, retake)

    _, flags = cpu_info()
    missing = sorted(set(manifest.values["cpu"]["flags"]) - set(flags))
    if missing:
        raise ManifestMismatch("cpu.flags", " ".join(missing), "lacks " + " ".join(missing),
                               f"The snapshot was taken on a CPU with {', '.join(missing)}. {retake}")
    if manifest.values["criu_version"] != criu_version:
        raise ManifestMismatch("criu_version", manifest.values["criu_version"], criu_version, retake)
