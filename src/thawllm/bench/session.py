"""The settings of a benchmark run and the services its measurements share."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from thawllm.bench.contenders import LaunchOptions
from thawllm.bench.processes import ProcessTracker
from thawllm.bench.records import Measurement

# Loading a 7B model from disk on two busy cores can take minutes.
READY_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 900.0
SNAPSHOT_TIMEOUT_S = 1800.0
PORT_RELEASE_TIMEOUT_S = 10.0

FIRST_PROMPT = "Tell me about SpaceX."
FIRST_MAX_TOKENS = 16
DECODE_PROMPT = "Once upon a time, in a small village by the sea, there lived"
DECODE_MAX_TOKENS = 64
REPLICAS = 4
CONTEXT_SIZE = 2048


@dataclass(frozen=True)
class BenchSettings:
    """The repetitions, page cache states, thread count and replica count of a run."""

    repeat: int
    caches: tuple[str, ...]
    threads: int | None
    replicas: int = REPLICAS


class Session:
    """The process tracker, HTTP client and progress output of one benchmark run."""

    def __init__(self, settings: BenchSettings, workspace: Path):
        self.settings = settings
        self.workspace = workspace
        self.tracker = ProcessTracker(workspace / "logs")
        self.client = httpx.Client(trust_env=False)
        self.options = LaunchOptions(threads=settings.threads, ctx_size=CONTEXT_SIZE)
        self.measurements: list[Measurement] = []
        self.planned = 0

    def record(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        self.report_progress(measurement)
        return measurement

    def report_progress(self, measurement: Measurement) -> None:
        count = f"[{len(self.measurements)}/{self.planned}]" if self.planned else f"[{len(self.measurements)}]"
        print(f"{count} {describe(measurement)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.tracker.stop_all()
        self.client.close()


def describe(measurement: Measurement) -> str:
    """Return a one-line summary of MEASUREMENT for the progress output."""
    where = f"{measurement.model} {measurement.contender}"
    if measurement.cache:
        where += f" {measurement.cache}"
    where += f" #{measurement.repetition + 1} {measurement.kind}"
    if measurement.status != "ok":
        return f"{where}: {measurement.status}: {measurement.reason.splitlines()[0] if measurement.reason else ''}"
    figures = []
    if measurement.ready_s is not None:
        figures.append(f"ready {_ms(measurement.ready_s)}")
    if measurement.first_response_s is not None:
        figures.append(f"first response {_ms(measurement.first_response_s)}")
    if measurement.decode_tokens_per_s is not None:
        figures.append(f"{measurement.decode_tokens_per_s:.1f} tokens/s")
    if measurement.peak_rss_bytes is not None:
        figures.append(f"peak RSS {measurement.peak_rss_bytes / 2**20:.0f} MiB")
    if measurement.pss_total_bytes is not None:
        figures.append(f"PSS of {measurement.replicas} replicas {measurement.pss_total_bytes / 2**20:.0f} MiB")
    if measurement.snapshot_s is not None:
        figures.append(f"snapshot {measurement.snapshot_s:.2f} s, {measurement.snapshot_bytes / 2**20:.1f} MiB")
    return f"{where}: {', '.join(figures)}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def load_average_1m() -> float:
    return os.getloadavg()[0]
