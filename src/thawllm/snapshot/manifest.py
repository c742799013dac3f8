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
SHOWN_VALUE_CHARS = 60

# The fields that a restore reads, dotted for nested ones, with their JSON types;
# "imports" is optional because older snapshots lack it.
REQUIRED_FIELDS = {
    "model.path": str,
    "model.size": int,
    "model.mtime_ns": int,
    "model.sha256": str,
    "engine.model_path": str,
    "engine.ctx_size": int,
    "engine.batch_size": int,
    "cpu.flags": list,
    "criu_version": str,
    "control_pipes.stdin": str,
    "control_pipes.stdout": str,
    "control_pipes.stderr": str,
}
JSON_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
                   dict: "an object", type(None): "null"}
_MISSING = object()


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
        try:
            return EngineSettings.from_dict(self.values["engine"])
        except TypeError as exc:
            raise ManifestError(f"{MANIFEST_NAME} field 'engine' is invalid: {exc}. Take the snapshot again.") from exc

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
    """Raise ManifestError unless VALUES has every field that a restore reads, with its JSON type."""
    if not isinstance(values, dict):
        raise ManifestError(f"{path} is damaged: it contains {_json_type(values)}, not a JSON object. "
                            "Take the snapshot again.")
    _check_field(values, "format_version", int, path)
    if values["format_version"] != FORMAT_VERSION:
        raise ManifestMismatch("format_version", values["format_version"], FORMAT_VERSION,
                               "Take the snapshot again with this version of thaw.")
    for name, expected in REQUIRED_FIELDS.items():
        _check_field(values, name, expected, path)
    for name in ("cpu.flags", "imports"):
        items = _field(values, name)
        if items is not _MISSING and not (isinstance(items, list) and all(isinstance(item, str) for item in items)):
            raise ManifestError(f"{path} is damaged: field '{name}' must be an array of strings. "
                                "Take the snapshot again.")


def _check_field(values: dict, name: str, expected: type, path: Path) -> None:
    parts = name.split(".")
    for depth in range(1, len(parts)):
        parent = _field(values, ".".join(parts[:depth]))
        if parent is not _MISSING and not isinstance(parent, dict):
            raise _damaged(path, ".".join(parts[:depth]), dict, parent)
    value = _field(values, name)
    if value is _MISSING:
        raise ManifestError(f"{path} is incomplete: field '{name}' is missing. Take the snapshot again.")
    # bool is a subclass of int in Python, but true is no JSON integer.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise _damaged(path, name, expected, value)


def _damaged(path: Path, name: str, expected: type, value) -> ManifestError:
    value_text = json.dumps(value, default=str)[:SHOWN_VALUE_CHARS]
    return ManifestError(f"{path} is damaged: field '{name}' must be {JSON_TYPE_NAMES[expected]}, not "
                         f"{_json_type(value)} ({value_text}). Take the snapshot again.")


def _field(values: dict, name: str):
    """Return the value of the dotted field NAME, or _MISSING."""
    value = values
    for key in name.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _json_type(value) -> str:
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


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
