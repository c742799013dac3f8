"""Command-line options of `thaw models`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_models_options(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="models_action", required=True, metavar="ACTION")
    synth = actions.add_parser("synth", help="generate a synthetic llama-architecture GGUF with random Q4_0 weights")
    # No argparse choices: the command also accepts shapes kept out of the help, for tests.
    synth.add_argument("shape", metavar="SHAPE", help="1b: 22 layers of 2048 (0.6 GB); 7b: 32 layers of 4096 (3.8 GB)")
    synth.add_argument("-o", "--output", type=Path, default=None,
                       help="GGUF file to write (default: $THAW_MODELS_DIR or ~/.cache/thaw/models)")
    synth.add_argument("--force", action="store_true", help="write the file again even if it exists")
