"""`thaw demo`: the same prompt answered by a fresh start and by a snapshot restore, timed side by side."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from thawllm.server.settings import ServerSettings

READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 120.0
DEMO_MAX_TOKENS = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def say(text: str) -> None:
    print(text, flush=True)


def wait_healthy(base_url: str, deadline: float, process: subprocess.Popen | None = None) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"thaw serve exited with status {process.returncode}; see its log above.")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{base_url} was not healthy within {READY_TIMEOUT_S:.0f} s.")


def predict(base_url: str, prompt: str) -> tuple[str, float]:
    query = urllib.parse.urlencode({"prompt": prompt, "max_tokens": DEMO_MAX_TOKENS, "temperature": 0})
    started = time.perf_counter()
    with urllib.request.urlopen(f"{base_url}/predict?{query}", timeout=REQUEST_TIMEOUT_S) as response:
        result = json.load(response)["result"]
    return result, time.perf_counter() - started


def fresh_start(model: Path, port: int, prompt: str) -> tuple[float, str, float]:
    """Launch `thaw serve` and time it from launch to /health 200; stop it afterwards."""
    base_url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "thawllm", "serve", str(model), "--port", str(port)])
    try:
        wait_healthy(base_url, time.monotonic() + READY_TIMEOUT_S, process)
        ready = time.perf_counter() - started
        text, latency = predict(base_url, prompt)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return ready, text, latency


def run_demo(args: argparse.Namespace) -> int:
    from thawllm.models.files import ModelFileError, resolve_model
    from thawllm.snapshot.create import take_snapshot
    from thawllm.snapshot.criu import CriuError
    from thawllm.snapshot.restore import restore_replica
    from thawllm.engine.base import EngineSettings

    try:
        model = resolve_model(args.model)
    except ModelFileError as exc:
        print(f"thaw demo: error: {exc}", file=sys.stderr)
        return 2

    port = args.port or free_port()
    say(f"\n== 1. Fresh start: thaw serve {model.name}, the usual way (load the model at start)")
    fresh_ready, fresh_text, fresh_latency = fresh_start(model, port, args.prompt)
    say(f"   Ready in {fresh_ready * 1000:.0f} ms; /predict?prompt={args.prompt} -> {fresh_text!r}")

    workdir = Path(tempfile.mkdtemp(prefix="thaw-demo-"))
    handle = None
    try:
        say("\n== 2. Snapshot: load, warm up and park a template, then dump it with CRIU")
        try:
            result = take_snapshot(EngineSettings(model_path=model), workdir / "snapshot")
        except CriuError as exc:
            say(f"   Snapshots cannot work here: {exc}\n   Run 'thaw doctor' for details.")
            return 1
        say(f"   {result.describe()}")

        say("\n== 3. Restore: a replica from the snapshot, serving on the same port")
        settings = ServerSettings(port=port).to_dict()
        handle, restore_seconds = restore_replica(workdir / "snapshot", settings, "replica")
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, time.monotonic() + READY_TIMEOUT_S)
        restored_text, restored_latency = predict(base_url, args.prompt)
        say(f"   Ready in {restore_seconds * 1000:.0f} ms; /predict?prompt={args.prompt} -> {restored_text!r}")
    finally:
        if handle is not None:
            handle.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    say("\n== Side by side")
    say(f"   {'':22}{'fresh start':>14}{'restore':>14}")
    say(f"   {'start to ready':22}{fresh_ready * 1000:>11.0f} ms{restore_seconds * 1000:>11.0f} ms")
    say(f"   {'first /predict':22}{fresh_latency * 1000:>11.0f} ms{restored_latency * 1000:>11.0f} ms")
    say(f"   Restore reached ready {fresh_ready / restore_seconds:.1f}x sooner; "
        f"same answer: {'yes' if fresh_text == restored_text else 'NO'}.")
    return 0 if fresh_text == restored_text else 1
