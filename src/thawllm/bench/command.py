"""`thaw bench`: measure every contender on every model and write the report."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from thawllm.bench.catalog import BenchModel, UnknownModel, resolve_models
from thawllm.bench.measure import COLD, WARM
from thawllm.bench.overhead import measure_overhead
from thawllm.bench.pagecache import PageCacheError
from thawllm.bench.report import Report, write_report
from thawllm.bench.runner import build_contenders, run_benchmark
from thawllm.bench.session import (
    DECODE_MAX_TOKENS, DECODE_PROMPT, FIRST_MAX_TOKENS, FIRST_PROMPT, BenchSettings, Session,
)
from thawllm.bench.system import describe_system, measure_disk_bandwidth

logger = logging.getLogger("thaw.bench")


class BenchUsageError(Exception):
    """The options of `thaw bench` are invalid."""


def bench_command(args: argparse.Namespace) -> int:
    try:
        settings = bench_settings(args)
        models = resolve_models(args.models, args.quick)
    except (BenchUsageError, UnknownModel) as exc:
        print(f"thaw bench: error: {exc}", file=sys.stderr)
        return 2

    # SIGTERM ends the run like Ctrl-C does, through the clean-up below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workspace = Path(tempfile.mkdtemp(prefix="thaw-bench-"))
    (workspace / "logs").mkdir()
    session = Session(settings, workspace)
    try:
        report = run_and_report(args, settings, models, session)
        paths = write_report(report, args.output)
    except KeyboardInterrupt:
        print("thaw bench: interrupted; stopping the processes it started.", file=sys.stderr)
        return 130
    finally:
        session.close()
        shutil.rmtree(workspace, ignore_errors=True)
    for path in paths:
        print(path)
    return 0


def bench_settings(args: argparse.Namespace) -> BenchSettings:
    if args.repeat < 1:
        raise BenchUsageError(f"--repeat must be 1 or more, not {args.repeat}.")
    if args.threads is not None and args.threads < 1:
        raise BenchUsageError(f"--threads must be 1 or more, not {args.threads}.")
    if args.quick:
        return BenchSettings(repeat=1, caches=(WARM,), threads=args.threads)
    caches = (WARM, COLD) if hasattr(os, "posix_fadvise") else (WARM,)
    return BenchSettings(repeat=args.repeat, caches=caches, threads=args.threads)


def run_and_report(args: argparse.Namespace, settings: BenchSettings, models: list[BenchModel],
                   session: Session) -> Report:
    contenders = build_contenders(session.workspace)
    system = describe_system()
    disk = disk_bandwidth(models)
    run_benchmark(session, models, contenders)
    runnable = [model for model in models if model.path is not None and not model.skip_reason]
    overhead = measure_overhead(runnable[0], args.quick, settings.threads) if runnable else []
    system["load_average_1m_at_end"] = os.getloadavg()[0]
    return Report(
        system=system,
        disk=disk,
        settings=settings_record(args, settings),
        models=[model_record(model, disk) for model in models],
        contender_labels={contender.key: contender.label for contender in contenders},
        measurements=session.measurements,
        notes=run_notes(args.quick, settings, models),
        gateway_overhead=overhead,
    )


def disk_bandwidth(models: list[BenchModel]) -> dict | None:
    """Measure the read bandwidth on the largest model file, which reads long enough to be steady."""
    paths = [model.path for model in models if model.path is not None]
    if not paths:
        return None
    largest = max(paths, key=lambda path: path.stat().st_size)
    try:
        disk = measure_disk_bandwidth(largest)
    except (OSError, PageCacheError) as exc:
        logger.error("Could not measure the disk bandwidth on %s: %s", largest, exc)
        return None
    print(f"Disk sequential read on {largest.name}: {disk['bytes_per_s'] / 1e9:.2f} GB/s", file=sys.stderr)
    return disk


def settings_record(args: argparse.Namespace, settings: BenchSettings) -> dict:
    return {
        "command": command_line(args),
        "repeat": settings.repeat,
        "caches": list(settings.caches),
        "threads": settings.threads,
        "replicas": settings.replicas,
        "first_request": {"prompt": FIRST_PROMPT, "max_tokens": FIRST_MAX_TOKENS, "temperature": 0},
        "decode_request": {"prompt": DECODE_PROMPT, "max_tokens": DECODE_MAX_TOKENS, "temperature": 0},
    }


def command_line(args: argparse.Namespace) -> str:
    """Return the `thaw bench` command that repeats this run."""
    words = ["thaw", "bench"]
    if args.quick:
        words.append("--quick")
    if args.models:
        words += ["--models", *args.models]
    if not args.quick:
        words += ["--repeat", str(args.repeat)]
    if args.threads:
        words += ["--threads", str(args.threads)]
    words += ["--output", str(args.output)]
    return shlex.join(words)


def model_record(model: BenchModel, disk: dict | None) -> dict:
    record = {"key": model.key, "label": model.label, "path": str(model.path) if model.path else None,
              "synthetic": model.synthetic, "skip_reason": model.skip_reason,
              "size_bytes": model.size_bytes, "disk_limit_s": None}
    if disk and model.size_bytes:
        record["disk_limit_s"] = model.size_bytes / disk["bytes_per_s"]
    return record


def run_notes(quick: bool, settings: BenchSettings, models: list[BenchModel]) -> list[str]:
    notes = []
    if quick:
        notes.append("--quick measures one repetition of the bundled model with a warm page cache only.")
    elif COLD not in settings.caches:
        notes.append("Cold page cache runs were skipped: this platform has no posix_fadvise.")
    for model in models:
        if model.skip_reason:
            notes.append(f"{model.label} was skipped: {model.skip_reason}.")
    return notes

