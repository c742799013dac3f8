"""The benchmark's measuring tools on real files, sockets and processes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from thawllm.bench import memory, pagecache, ports
from thawllm.bench.processes import ProcessTracker, descendant_pids
from thawllm.bench.records import FAILED, OK, REPLICAS, SNAPSHOT, START, Measurement
from thawllm.bench.summary import Spread, summarize

FILE_BYTES = 8 << 20
SHORT_STOP_TIMEOUT_S = 0.5


def pid_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(FILE_BYTES))
    return path


def test_drop_then_warm_changes_cached_fraction(data_file):
    pagecache.drop_file_pages(data_file)
    assert pagecache.cached_fraction(data_file) == 0.0
    pagecache.warm_pages([data_file])
    assert pagecache.cached_fraction(data_file) == 1.0


def test_cached_fraction_weighs_files_by_size(tmp_path, data_file):
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(FILE_BYTES // 4))
    pagecache.drop_pages([data_file, small])
    pagecache.warm_pages([small])
    assert pagecache.cached_fraction_of([data_file, small]) == pytest.approx(0.2)


def test_read_bandwidth_reads_from_disk(data_file):
    bandwidth, _ = pagecache.read_bandwidth(data_file)
    assert bandwidth > 0


def test_drop_reports_missing_file(tmp_path):
    with pytest.raises(pagecache.PageCacheError, match="missing.bin"):
        pagecache.drop_file_pages(tmp_path / "missing.bin")


def test_listener_pid_finds_own_socket():
    with socket.socket() as server:
        server.bind((ports.LOOPBACK, 0))
        server.listen()
        port = server.getsockname()[1]
        assert not ports.port_is_free(port)
        assert ports.listener_pid(port, [os.getpid()]) == os.getpid()
        assert ports.listener_pid(port, [os.getppid()]) is None
    assert ports.port_is_free(port)


def test_free_ports_are_distinct():
    chosen = ports.free_ports(4)
    assert len(set(chosen)) == 4


def test_memory_of_own_process():
    assert memory.peak_rss_bytes(os.getpid()) > 0
    assert memory.pss_bytes(os.getpid()) > 0
    assert memory.available_bytes() <= memory.total_bytes()


def test_memory_reports_missing_process():
    with pytest.raises(memory.MemoryReadError, match="still running"):
        memory.pss_bytes(2**22 + 1)


def test_stop_ends_process_tree(tmp_path):
    tracker = ProcessTracker(tmp_path)
    launched = tracker.launch(["sh", "-c", "sleep 300 & sleep 300 & wait"], "tree")
    deadline = time.monotonic() + 10
    while len(descendant_pids(launched.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    children = descendant_pids(launched.pid)
    assert len(children) == 2
    tracker.stop_all()
    assert launched.exited()
    assert not any(pid_running(pid) for pid in children)


def test_stop_escalates_to_sigkill(tmp_path):
    tracker = ProcessTracker(tmp_path)
    launched = tracker.launch(["sh", "-c", "trap '' TERM; sleep 300 & wait"], "stubborn")
    deadline = time.monotonic() + 10
    while not descendant_pids(launched.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    child = descendant_pids(launched.pid)[0]
    launched.stop(stop_timeout_s=SHORT_STOP_TIMEOUT_S)
    assert launched.process.returncode == -9
    assert not pid_running(child)


def test_stop_ends_adopted_process(tmp_path):
    tracker = ProcessTracker(tmp_path)
    launched = tracker.launch(["sleep", "300"], "parent")
    outsider = subprocess.Popen(["sleep", "300"])
    try:
        launched.adopt(outsider.pid)
        tracker.stop(launched)
        assert outsider.wait(timeout=10) == -15
    finally:
        if outsider.poll() is None:
            outsider.kill()
            outsider.wait()


def test_launch_writes_output_to_log(tmp_path):
    tracker = ProcessTracker(tmp_path)
    launched = tracker.launch(["sh", "-c", "echo first; echo second >&2"], "echo")
    assert launched.wait(10) == 0
    assert launched.log_tail() == "first\nsecond"
    tracker.stop(launched)


def test_spread_of_samples():
    spread = Spread.of([3.0, 1.0, 2.0])
    assert (spread.median, spread.minimum, spread.maximum, spread.count) == (2.0, 1.0, 3.0, 3)
    assert Spread.of([]) is None


def test_summary_groups_and_attaches_related_rows():
    rows = [
        Measurement(START, "m", "serve", "warm", 0, first_response_s=1.0),
        Measurement(START, "m", "serve", "warm", 1, first_response_s=3.0),
        Measurement(START, "m", "serve", "warm", 2, status=FAILED, reason="timed out"),
        Measurement(START, "m", "serve", "cold", 0, first_response_s=5.0),
        Measurement(REPLICAS, "m", "serve", "warm", 0, replicas=4, pss_total_bytes=400),
        Measurement(SNAPSHOT, "m", "serve", "", 0, snapshot_s=2.0, snapshot_bytes=10),
    ]
    summaries = {(summary.cache): summary for summary in summarize(rows)}
    warm = summaries["warm"]
    assert warm.figures["first_response_s"].median == 2.0
    assert warm.figures["first_response_s"].count == 2
    assert warm.figures["pss_total_bytes"].median == 400
    assert warm.figures["snapshot_s"].median == 2.0
    assert warm.problems == ["failed: timed out"]
    cold = summaries["cold"]
    assert cold.figures["first_response_s"].median == 5.0
    assert "pss_total_bytes" not in cold.figures


def test_measurement_round_trips_through_dict():
    row = Measurement(START, "m", "flask", "warm", 0, status=OK, ready_s=0.5)
    assert Measurement.from_dict({**row.to_dict(), "unknown": 1}) == row
