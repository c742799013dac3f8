"""`thaw models synth SHAPE`: write a synthetic model and print its path."""

from __future__ import annotations

import argparse
import sys
import time

from thawllm.models.synth import SynthError, default_path, ensure_synthetic_model, find_shape, write_synthetic_model

# Print progress about every tenth of the tensors.
PROGRESS_STEPS = 10


def models_command(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        shape = find_shape(args.shape)
        path = (args.output or default_path(shape)).expanduser().absolute()
        if args.force:
            write_synthetic_model(shape, path, progress=_print_progress)
        else:
            ensure_synthetic_model(shape, path, progress=_print_progress)
    except SynthError as exc:
        print(f"thaw models synth: error: {exc}", file=sys.stderr)
        return 2

    size_gb = path.stat().st_size / 1e9
    elapsed_s = time.perf_counter() - started
    print(f"Synthetic model {shape.name} ({size_gb:.2f} GB) ready in {elapsed_s:.1f} s.", file=sys.stderr)
    print(path)
    return 0


def _print_progress(done: int, total: int) -> None:
    step = max(1, total // PROGRESS_STEPS)
    if done % step == 0 or done == total:
        print(f"  {done}/{total} tensors written", file=sys.stderr, flush=True)
