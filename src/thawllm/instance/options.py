"""Command-line options of the service process, shared by every way of starting one."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from thawllm.engine.base import DEFAULT_BATCH_SIZE, DEFAULT_CTX_SIZE, EngineSettings


def count_at_least(minimum: int):
    """Return an argparse type that reads an integer of MINIMUM or more."""

    def read(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: pass {minimum} or more")
        return value

    return read


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    # llama.cpp reads a context size of 0 as the model's training context.
    parser.add_argument("--ctx-size", type=count_at_least(0), default=DEFAULT_CTX_SIZE,
                        help=f"context size in tokens; 0 takes the model's own (default {DEFAULT_CTX_SIZE})")
    parser.add_argument("--batch-size", type=count_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help=f"prompt evaluation batch size in tokens (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--threads", type=count_at_least(0), default=None,
                        help="CPU threads for inference; 0 means all cores (default: all cores)")
    parser.add_argument("--repack", action=argparse.BooleanOptionalAction, default=False,
                        help="let llama.cpp repack weights for faster decoding; loading is slower "
                        "and snapshots store the repacked weights (default: off)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE in the service process before it serves or parks, "
                        "for example to register snapshot hooks (repeatable)")


def engine_settings_from(args: argparse.Namespace, model_path: Path) -> EngineSettings:
    return EngineSettings(
        model_path=model_path,
        ctx_size=args.ctx_size,
        batch_size=args.batch_size,
        threads=args.threads,
        repack=args.repack,
    )


def engine_arguments(settings: EngineSettings, imports: list[str]) -> list[str]:
    """Return the command-line arguments that recreate SETTINGS in a child process."""
    arguments = [
        str(settings.model_path),
        "--ctx-size", str(settings.ctx_size),
        "--batch-size", str(settings.batch_size),
        "--repack" if settings.repack else "--no-repack",
    ]
    if settings.threads:
        arguments += ["--threads", str(settings.threads)]
    for module in imports:
        arguments += ["--import", module]
    return arguments


def import_modules(names: list[str]) -> None:
    for name in names:
        importlib.import_module(name)
