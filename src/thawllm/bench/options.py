"""Command-line options of `thaw bench`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=None,
                        help="models to measure: smollm2, gemma3-270m, synth-1b, synth-7b or GGUF paths "
                        "(default: all that are available)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per contender (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="only the bundled model, warm page cache, one repetition (for CI)")
    parser.add_argument("--output", type=Path, default=Path("bench-results"),
                        help="directory for the JSON, CSV, Markdown and PNG results (default bench-results)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of every contender's inference (default: all cores)")
