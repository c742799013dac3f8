"""The report files built from measurements: Markdown table, JSON, CSV and chart."""

from __future__ import annotations

import csv
import json

from thawllm.bench.records import FAILED, SKIPPED, START, Measurement
from thawllm.bench.report import Report, markdown, write_report

LABELS = {"flask": "Flask app (usual)", "restore": "thaw restore (file-backed)"}


def build_report() -> Report:
    measurements = [
        Measurement(START, "small", "flask", "warm", 0, ready_s=1.5, first_response_s=2.0,
                    decode_tokens_per_s=40.0, peak_rss_bytes=200 << 20),
        Measurement(START, "small", "flask", "warm", 1, ready_s=1.7, first_response_s=2.4,
                    decode_tokens_per_s=42.0, peak_rss_bytes=210 << 20),
        Measurement(START, "small", "flask", "cold", 0, status=FAILED, reason="ready timed out\nmore lines"),
        Measurement(START, "small", "restore", "warm", 0, status=SKIPPED, reason="needs root | criu"),
    ]
    return Report(
        system={"date": "2026-01-01 00:00:00 UTC", "cpu": "Test CPU", "cores": 2, "memory_bytes": 8 << 30,
                "kernel": "6.1", "python": "3.11", "thaw": "0.1.0", "llama_cpp_python": "0.3.36",
                "criu": "4.1.1", "load_average_1m_at_start": 0.5, "load_average_1m_at_end": 0.7},
        disk={"file": "/m.gguf", "bytes_per_s": 2e9, "samples_bytes_per_s": [2e9, 2.1e9, 1.9e9], "o_direct": True},
        settings={"command": "thaw bench", "repeat": 2, "caches": ["warm", "cold"], "threads": None, "replicas": 4},
        models=[
            {"key": "small", "label": "Small model", "path": "/m.gguf", "size_bytes": 100_000_000,
             "disk_limit_s": 0.05, "skip_reason": None, "synthetic": False},
            {"key": "gone", "label": "Missing model", "path": None, "size_bytes": None,
             "disk_limit_s": None, "skip_reason": "package not installed", "synthetic": False},
        ],
        contender_labels=LABELS,
        measurements=measurements,
    )


def test_markdown_shows_median_and_range():
    text = markdown(build_report(), "chart.png")
    assert "| Flask app (usual) | warm | 1600 ms (1500 ms–1700 ms) | 2200 ms (2000 ms–2400 ms) | 41.0 (40.0–42.0) |" in text


def test_markdown_keeps_problems_on_one_line():
    text = markdown(build_report(), "chart.png")
    assert "| Flask app (usual) | cold | – | – |" in text
    assert "failed: ready timed out more lines" in text
    assert "skipped: needs root / criu" in text


def test_markdown_header_and_skipped_model():
    text = markdown(build_report(), "chart.png")
    assert "- CPU: Test CPU, 2 cores" in text
    assert "2.00 GB/s" in text
    assert "disk limit 50 ms" in text
    assert "## Missing model\n\nSkipped: package not installed" in text


def test_write_report_writes_four_files(tmp_path):
    paths = write_report(build_report(), tmp_path / "out")
    assert [path.name for path in paths] == ["results.json", "runs.csv", "summary.md",
                                             "time-to-first-response.png"]
    assert all(path.stat().st_size > 0 for path in paths)
    saved = json.loads(paths[0].read_text())
    assert len(saved["measurements"]) == 4
    assert saved["summary"][0]["figures"]["first_response_s"]["median"] == 2.2
    with open(paths[1], newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4
    assert rows[2]["reason"] == "ready timed out\nmore lines"
    assert not [path for path in (tmp_path / "out").iterdir() if path.name.startswith(".")]
