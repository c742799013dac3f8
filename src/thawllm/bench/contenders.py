"""The ways of starting a service that the benchmark compares, behind one small interface.

Each contender launches new processes for every measurement, so every
figure counts from a process launch: the Flask app, `thaw serve`, and
`thaw restore` of a snapshot whose weights are file-backed or repacked.
The gateway contenders live in bench/gateway.py, because they measure a
request rather than a launch.
"""

from __future__ import annotations

import abc
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from thawllm.bench import probe
from thawllm.bench.catalog import BenchModel
from thawllm.bench.processes import Launched, ProcessTracker

THAW = [sys.executable, "-m", "thawllm.cli"]


class ContenderSkipped(Exception):
    """A contender cannot run on this machine or for this model; the message gives the reason."""


@dataclass(frozen=True)
class Instance:
    """One serving port and the launched command that serves it."""

    launched: Launched
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LaunchOptions:
    """Settings that every contender passes to the processes it starts."""

    threads: int | None
    ctx_size: int


class Contender(abc.ABC):
    """A way of starting a service for a model, measured from the launch of its process."""

    key: str
    label: str
    # Whether readiness means /health returning 200 (thaw) or any HTTP response (Flask).
    health_path: str = "/health"
    require_ok: bool = True
    # Whether each process copies the weights into private memory, rather than sharing the file's pages.
    private_weights: bool = False

    def prepare(self, model: BenchModel, tracker: ProcessTracker) -> None:
        """Make what the contender needs before its launches; raise ContenderSkipped if it cannot run."""

    @abc.abstractmethod
    def start(self, model: BenchModel, ports: list[int], tracker: ProcessTracker,
              options: LaunchOptions) -> list[Instance]:
        """Launch processes that serve MODEL on PORTS, one replica per port."""

    def cache_files(self, model: BenchModel) -> list[Path]:
        """Return the files whose pages a cold start must read from disk."""
        return [model.path]

    def decode(self, client: httpx.Client, instance: Instance, prompt: str, max_tokens: int,
               timeout_s: float) -> probe.Completion:
        return probe.complete(client, instance.base_url, prompt, max_tokens, timeout_s)

    def cleanup(self) -> None:
        """Remove what prepare() made."""


class FlaskContender(Contender):
    key = "flask"
    label = "Flask app (usual)"
    # The Flask app has no health route: any response, even a 404, means its import finished.
    health_path = "/"
    require_ok = False
    # llama-cpp-python's default model parameters repack weights into private memory where the CPU allows.
    private_weights = True

    def start(self, model, ports, tracker, options):
        instances = []
        for port in ports:
            argv = [sys.executable, "-m", "thawllm.bench.flask_app", str(model.path), "--port", str(port)]
            if options.threads:
                argv += ["--threads", str(options.threads)]
            instances.append(Instance(tracker.launch(argv, f"flask-{model.key}"), port))
        return instances

    def decode(self, client, instance, prompt, max_tokens, timeout_s):
        return probe.predict(client, instance.base_url, prompt, max_tokens, timeout_s)


class ServeContender(Contender):
    key = "serve"
    label = "thaw serve (fresh start)"

    def start(self, model, ports, tracker, options):
        instances = []
        for port in ports:
            argv = [*THAW, "serve", str(model.path), "--port", str(port), *_engine_arguments(options)]
            instances.append(Instance(tracker.launch(argv, f"serve-{model.key}"), port))
        return instances


def _engine_arguments(options: LaunchOptions, repack: bool = False) -> list[str]:
    arguments = ["--ctx-size", str(options.ctx_size), "--repack" if repack else "--no-repack"]
    if options.threads:
        arguments += ["--threads", str(options.threads)]
    return arguments


@dataclass(frozen=True)
class SnapshotFigures:
    """One `thaw snapshot` run: wall time from launch to exit, and the directory's size."""

    seconds: float
    size_bytes: int


def criu_problem() -> str | None:
    """Return why snapshots cannot be taken here (no root, no criu), or None when they can."""
    from thawllm.snapshot.criu import Criu, CriuError, privilege_problem

    problem = privilege_problem()
    if problem:
        return problem
    try:
        Criu.find()
    except CriuError as exc:
        return str(exc).splitlines()[0]
    except ImportError as exc:
        return f"thaw's criu support failed to import ({exc}); reinstall thaw"
    return None


class RestoreContender(Contender):
    """`thaw restore` of a snapshot made by `thaw snapshot`, with file-backed or repacked weights."""

    def __init__(self, workspace: Path, repack: bool):
        self.workspace = workspace
        self.repack = repack
        self.private_weights = repack
        self.key = "restore-repack" if repack else "restore"
        self.label = "thaw restore (repacked)" if repack else "thaw restore (file-backed)"
        self._snapshots: dict[str, Path] = {}

    def snapshot_dir(self, model: BenchModel) -> Path:
        return self.workspace / f"snapshot-{model.key}-{self.key}"

    def prepare(self, model, tracker):
        problem = criu_problem()
        if problem:
            raise ContenderSkipped(problem)

    def has_snapshot(self, model: BenchModel) -> bool:
        return model.key in self._snapshots

    def create_snapshot(self, model: BenchModel, tracker: ProcessTracker, options: LaunchOptions,
                        timeout_s: float) -> SnapshotFigures:
        """Run `thaw snapshot` for MODEL, replacing this contender's previous snapshot of it."""
        directory = self.snapshot_dir(model)
        argv = [*THAW, "snapshot", str(model.path), "-o", str(directory), "--force",
                *_engine_arguments(options, repack=self.repack)]
        launched = tracker.launch(argv, f"snapshot-{model.key}-{self.key}")
        try:
            status = launched.wait(timeout_s)
            seconds = launched.elapsed_s()
        finally:
            tracker.stop(launched)
        if status != 0:
            reason = "timed out" if status is None else f"failed with exit status {status}"
            raise ContenderSkipped(f"thaw snapshot {reason}: {launched.log_tail()}")
        self._snapshots[model.key] = directory
        return SnapshotFigures(seconds, _directory_bytes(directory))

    def start(self, model, ports, tracker, options):
        directory = self._snapshots.get(model.key)
        if directory is None:
            raise ContenderSkipped(f"No snapshot of {model.key} was made; see the snapshot run above.")
        argv = [*THAW, "restore", str(directory), "--ports", ",".join(map(str, ports)),
                "--replicas", str(len(ports))]
        launched = tracker.launch(argv, f"restore-{model.key}")
        return [Instance(launched, port) for port in ports]

    def cache_files(self, model):
        directory = self._snapshots.get(model.key)
        images = sorted(path for path in directory.rglob("*") if path.is_file()) if directory else []
        return [model.path, *images]

    def cleanup(self):
        import shutil

        for directory in self._snapshots.values():
            shutil.rmtree(directory, ignore_errors=True)
        self._snapshots.clear()


def _directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
