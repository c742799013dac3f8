"""`thaw bench --quick` as a real subprocess: its files, its figures, and what it leaves behind."""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from thawllm.bench import ports

THAW = [sys.executable, "-m", "thawllm.cli"]
QUICK_TIMEOUT_S = 600.0
INTERRUPT_TIMEOUT_S = 120.0
# Every process the benchmark starts inherits this variable, which lets the
# tests find leftovers by their environment, even processes restored by criu.
MARKER_VARIABLE = "THAW_BENCH_TEST_RUN"
ALL_CONTENDERS = ("flask", "serve", "restore", "restore-repack", "gateway-criu", "gateway-cold")
CRIU_CONTENDERS = ("restore", "restore-repack", "gateway-criu")
REPLICA_CONTENDERS = ("flask", "serve", "restore", "restore-repack")
START_FIGURES = ("ready_s", "first_response_s", "decode_tokens_per_s", "peak_rss_bytes")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def criu_unavailable_reason() -> str | None:
    from thawllm.bench.contenders import criu_problem

    return criu_problem()


def marked_pids(marker: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """Return the pids of running processes whose environment carries MARKER."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), *exclude):
            continue
        try:
            environment = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environment.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def bench_environment(marker: str, tmp_path: Path) -> dict:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    return {**os.environ, MARKER_VARIABLE: marker, "TMPDIR": str(temporary)}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run `thaw bench --quick` once for the module; return (completed process, output dir, marker)."""
    tmp_path = tmp_path_factory.mktemp("bench")
    marker = uuid.uuid4().hex
    output = tmp_path / "out"
    completed = subprocess.run([*THAW, "bench", "--quick", "--threads", "1", "--output", str(output)],
                               env=bench_environment(marker, tmp_path), capture_output=True, text=True,
                               timeout=QUICK_TIMEOUT_S)
    return completed, output, marker, tmp_path


@pytest.fixture(scope="module")
def results(quick_run):
    completed, output, _, _ = quick_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((output / "results.json").read_text())


def test_quick_writes_all_files(quick_run):
    completed, output, _, _ = quick_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("results.json", "runs.csv", "summary.md", "time-to-first-response.png"):
        assert (output / name).is_file(), f"{name} is missing"
    printed = completed.stdout.split()
    assert str(output / "results.json") in printed


def test_quick_shows_progress_per_measurement(quick_run, results):
    completed = quick_run[0]
    progress = [line for line in completed.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == len(results["measurements"])


def test_quick_measures_every_contender(results):
    allowed_skip = criu_unavailable_reason()
    if os.environ.get("CI") == "true":
        assert allowed_skip is None, f"CI must run the criu contenders: {allowed_skip}"
    starts = {row["contender"]: row for row in results["measurements"] if row["kind"] == "start"}
    assert set(starts) == set(ALL_CONTENDERS)
    for contender, row in starts.items():
        if contender in CRIU_CONTENDERS and allowed_skip:
            assert row["status"] == "skipped", row
            assert row["reason"], row
            continue
        assert row["status"] == "ok", row
        for figure in START_FIGURES:
            assert isinstance(row[figure], (int, float)) and row[figure] > 0, (contender, figure, row)


def test_quick_measures_gateway_overhead(results):
    records = {record["starter"]: record for record in results["gateway_overhead"]}
    assert set(records) == {"criu", "cold"}
    for starter, record in records.items():
        if starter == "criu" and criu_unavailable_reason() and os.environ.get("CI") != "true":
            assert record["skipped"]
            continue
        assert record["first_response_median_s"] > 0
        for figures in record["warm"].values():
            assert figures["direct_p50_ms"] > 0
            assert figures["gateway_p99_ms"] >= figures["gateway_p50_ms"]


def test_quick_orders_ready_before_response(results):
    for row in results["measurements"]:
        if row["kind"] == "start" and row["status"] == "ok" and not row["contender"].startswith("gateway"):
            assert row["ready_s"] <= row["first_response_s"], row


def test_quick_sums_replica_pss(results):
    allowed_skip = criu_unavailable_reason()
    replicas = {row["contender"]: row for row in results["measurements"] if row["kind"] == "replicas"}
    for contender in REPLICA_CONTENDERS:
        if contender in CRIU_CONTENDERS and allowed_skip:
            continue
        row = replicas[contender]
        assert row["status"] == "ok", row
        assert row["replicas"] == 4
        assert row["pss_total_bytes"] > 0


def test_quick_records_snapshots(results):
    if criu_unavailable_reason():
        pytest.skip(f"snapshots need criu and root: {criu_unavailable_reason()}")
    snapshots = {row["contender"]: row for row in results["measurements"] if row["kind"] == "snapshot"}
    assert set(snapshots) == {"restore", "restore-repack"}
    for row in snapshots.values():
        assert row["status"] == "ok", row
        assert row["snapshot_s"] > 0
        assert row["snapshot_bytes"] > 0


def test_quick_header_describes_machine(results):
    system = results["system"]
    for key in ("date", "cpu", "cores", "memory_bytes", "kernel", "thaw", "llama_cpp_python", "criu"):
        assert system[key], key
    assert results["disk"]["bytes_per_s"] > 0
    model = results["models"][0]
    assert model["key"] == "smollm2"
    assert model["disk_limit_s"] > 0
    assert results["settings"]["caches"] == ["warm"]


def test_quick_csv_matches_json(quick_run, results):
    output = quick_run[1]
    with open(output / "runs.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(results["measurements"])
    for row, measured in zip(rows, results["measurements"]):
        assert row["contender"] == measured["contender"]
        if measured["first_response_s"] is not None:
            assert float(row["first_response_s"]) == pytest.approx(measured["first_response_s"])


def test_quick_markdown_has_table(quick_run, results):
    text = (quick_run[1] / "summary.md").read_text()
    assert "| Contender | Cache | Ready | First response |" in text
    for label in results["contenders"].values():
        assert f"| {label} | warm |" in text
    assert "CTransformers" in text
    assert "time-to-first-response.png" in text


def test_quick_chart_is_png(quick_run):
    data = (quick_run[1] / "time-to-first-response.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    assert width > 400
    assert height > 300


def test_quick_leaves_nothing_behind(quick_run, results):
    _, _, marker, tmp_path = quick_run
    assert marked_pids(marker) == []
    assert list((tmp_path / "tmp").iterdir()) == []
    for row in results["measurements"]:
        if row["status"] == "ok" and row["kind"] in ("start", "replicas"):
            assert row["ports_released"] is True, row


def test_interrupt_stops_everything(tmp_path):
    marker = uuid.uuid4().hex
    # A shell starts background jobs with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler; give the benchmark the default.
    bench = subprocess.Popen([*THAW, "bench", "--quick", "--threads", "1", "--output", str(tmp_path / "out")],
                             env=bench_environment(marker, tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + INTERRUPT_TIMEOUT_S
        while not marked_pids(marker, exclude=(bench.pid,)) and time.monotonic() < deadline:
            assert bench.poll() is None, "thaw bench exited before it started any process"
            time.sleep(0.05)
        assert marked_pids(marker, exclude=(bench.pid,)), "no benchmark process was running at the interrupt"
        # Let the started process get into its measurement before the interrupt.
        time.sleep(1.0)
        bench.send_signal(signal.SIGINT)
        status = bench.wait(timeout=INTERRUPT_TIMEOUT_S)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert status == 130
    assert marked_pids(marker) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_bench_rejects_unknown_model(tmp_path):
    completed = subprocess.run([*THAW, "bench", "--models", "no-such-model", "--output", str(tmp_path / "out")],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "'no-such-model'" in completed.stderr
    assert "smollm2" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_bench_rejects_zero_repeat(tmp_path):
    completed = subprocess.run([*THAW, "bench", "--repeat", "0", "--output", str(tmp_path / "out")],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "--repeat must be 1 or more, not 0" in completed.stderr


def test_free_port_is_listenable():
    port = ports.free_port()
    assert ports.port_is_free(port)
