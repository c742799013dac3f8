"""The files a benchmark writes: every run as JSON and CSV, and a Markdown summary."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from thawllm.bench.overhead import overhead_lines
from thawllm.bench.records import FIELD_NAMES, Measurement
from thawllm.bench.summary import ContenderSummary, Spread, summarize

# A cold run whose files stayed cached above this share gets a note in the table.
COLD_CACHED_NOTE_THRESHOLD = 0.05
JSON_NAME = "results.json"
CSV_NAME = "runs.csv"
MARKDOWN_NAME = "summary.md"
CHART_NAME = "time-to-first-response.png"
MIB = 2**20

# Explanations of the figures, listed at the end of the Markdown summary.
METHOD_NOTES = [
    "Every measurement starts new processes. *Ready* counts from the launch of the process to "
    "/health returning 200; the Flask app has no health route, so for it *ready* is its first HTTP "
    "response, which it can send only after its import has loaded the model. For the gateway "
    "contenders, *ready* is the gateway's own /health, before any instance runs.",
    "*First response* counts from the launch to the complete response of GET /predict with a fixed "
    "prompt, max_tokens=16 and temperature 0. For the gateway contenders the gateway is started and "
    "ready first, and the clock starts when that request reaches it with no instance running.",
    "*Decode* is the completion tokens of a 64-token request at temperature 0 divided by its wall "
    "time, which includes the evaluation of a 16-token prompt.",
    "*Peak RSS* is VmHWM of the process that listens on the port; for a restored process it counts "
    "from the restore only. *PSS* sums /proc/PID/smaps_rollup over {replicas} replicas after each has "
    "served one request, so pages they share count once: separate processes for Flask and thaw serve, "
    "`thaw restore --replicas {replicas}` for the restores.",
    "*Snapshot* is the wall time of `thaw snapshot` from launch to exit (template start, model load, "
    "warm-up, dump) and the size of the snapshot directory.",
    "*Cold* runs first drop the pages of the model file, and of the snapshot images, from the page "
    "cache with posix_fadvise(POSIX_FADV_DONTNEED), which needs no root and leaves the rest of the "
    "cache alone; pages mapped by another running process stay cached, so each run records the "
    "cached share just before its launch. The disk limit is the model's size divided by the "
    "disk's sequential read bandwidth, measured in the same run.",
    "The Flask app calls llama_cpp.Llama directly, as the 2023 CPU demo apps called CTransformers: "
    "CTransformers 0.2.27, its last release (2023), cannot read current GGUF files. It passes the "
    "same context size and threads as thaw and keeps llama-cpp-python's other defaults, which "
    "repack weights at load where the CPU has a faster layout.",
    "Synthetic models have the shapes of real ones and random Q4_0 weights (`thaw models synth`); "
    "they cost what a real model of that shape costs, but their text is noise.",
]


@dataclass
class Report:
    """Everything one benchmark run produced, ready to be written."""

    system: dict
    disk: dict | None
    settings: dict
    models: list[dict]
    contender_labels: dict[str, str]
    measurements: list[Measurement]
    notes: list[str] = field(default_factory=list)
    gateway_overhead: list[dict] = field(default_factory=list)

    def summaries(self) -> list[ContenderSummary]:
        return _ordered(self, summarize(self.measurements))

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "disk": self.disk,
            "settings": self.settings,
            "models": self.models,
            "contenders": self.contender_labels,
            "notes": self.notes,
            "gateway_overhead": self.gateway_overhead,
            "summary": [summary.to_dict() for summary in self.summaries()],
            "measurements": [row.to_dict() for row in self.measurements],
        }


def write_report(report: Report, directory: Path) -> list[Path]:
    """Write the JSON, CSV, Markdown and PNG files into DIRECTORY and return their paths."""
    from thawllm.bench.chart import write_chart

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / JSON_NAME, directory / CSV_NAME, directory / MARKDOWN_NAME, directory / CHART_NAME]
    _write_atomically(paths[0], json.dumps(report.to_dict(), indent=2) + "\n")
    _write_atomically(paths[1], _csv_text(report.measurements))
    _write_atomically(paths[2], markdown(report, paths[3].name))
    write_chart(report, paths[3])
    return paths


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _csv_text(measurements: list[Measurement]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELD_NAMES, lineterminator="\n")
    writer.writeheader()
    for row in measurements:
        writer.writerow(row.to_dict())
    return buffer.getvalue()


def markdown(report: Report, chart_name: str) -> str:
    lines = ["# thaw bench results", ""]
    lines += _header_lines(report)
    lines += ["", f"![Time to first response]({chart_name})", ""]
    for model in report.models:
        lines += _model_section(report, model)
    lines += overhead_lines(report.gateway_overhead)
    lines += ["## How the figures are measured", ""]
    replicas = report.settings.get("replicas")
    lines += [f"- {note.format(replicas=replicas)}" for note in METHOD_NOTES + report.notes]
    return "\n".join(lines) + "\n"


def _header_lines(report: Report) -> list[str]:
    system = report.system
    lines = [
        f"- Date: {system['date']}",
        f"- CPU: {system['cpu']}, {system['cores']} cores; memory {system['memory_bytes'] / 2**30:.1f} GiB; "
        f"kernel {system['kernel']}",
        f"- Versions: thaw {system['thaw']}, llama-cpp-python {system['llama_cpp_python']}, "
        f"criu {system['criu']}, Python {system['python']}",
    ]
    if report.disk:
        direct = "O_DIRECT" if report.disk["o_direct"] else "after dropping the file's cached pages"
        samples = ", ".join(f"{value / 1e9:.2f}" for value in report.disk["samples_bytes_per_s"])
        lines.append(f"- Disk sequential read: {report.disk['bytes_per_s'] / 1e9:.2f} GB/s "
                     f"(median of {samples} GB/s; 1 MiB reads, {direct})")
    settings = report.settings
    lines.append(f"- Command: `{settings['command']}`; {settings['repeat']} repetition(s); "
                 f"page cache: {', '.join(settings['caches'])}; threads: {settings['threads'] or 'all cores'}")
    lines.append(f"- Load average (1 min): {system['load_average_1m_at_start']:.2f} at the start, "
                 f"{system.get('load_average_1m_at_end', float('nan')):.2f} at the end; other work on the "
                 "machine slows every contender")
    return lines


def _model_section(report: Report, model: dict) -> list[str]:
    title = f"## {model['label']}"
    if model.get("skip_reason"):
        return [title, "", f"Skipped: {model['skip_reason']}", ""]
    size = model["size_bytes"]
    limit = f"; disk limit {model['disk_limit_s'] * 1000:.0f} ms" if model.get("disk_limit_s") else ""
    lines = [title, "", f"`{Path(model['path']).name}`, {size / 1e6:.0f} MB{limit}.", ""]
    lines += [
        "| Contender | Cache | Ready | First response | Decode tokens/s | Peak RSS MiB "
        f"| PSS of {report.settings['replicas']} replicas MiB | Snapshot | Notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for summary in report.summaries():
        if summary.model == model["key"]:
            lines.append(_table_row(report, summary))
    return lines + [""]


def _ordered(report: Report, summaries: list[ContenderSummary]) -> list[ContenderSummary]:
    """Sort SUMMARIES by contender in the report's order, then by cache in the run's order."""
    contenders = list(report.contender_labels)
    caches = list(report.settings["caches"])

    def position(summary: ContenderSummary) -> tuple[int, int]:
        contender = contenders.index(summary.contender) if summary.contender in contenders else len(contenders)
        cache = caches.index(summary.cache) if summary.cache in caches else len(caches)
        return contender, cache
    return sorted(summaries, key=position)


def _table_row(report: Report, summary: ContenderSummary) -> str:
    figures = summary.figures
    snapshot = ""
    if "snapshot_s" in figures:
        snapshot = (f"{_spread(figures['snapshot_s'], _seconds)}, "
                    f"{figures['snapshot_bytes'].median / MIB:.1f} MiB")
    cells = [
        report.contender_labels.get(summary.contender, summary.contender),
        summary.cache,
        _spread(figures.get("ready_s"), _seconds),
        _spread(figures.get("first_response_s"), _seconds),
        _spread(figures.get("decode_tokens_per_s"), lambda value: f"{value:.1f}"),
        _spread(figures.get("peak_rss_bytes"), lambda value: f"{value / MIB:.0f}"),
        _spread(figures.get("pss_total_bytes"), lambda value: f"{value / MIB:.0f}"),
        snapshot,
        "; ".join(_one_line(note) for note in _notes(summary)),
    ]
    return "| " + " | ".join(cells) + " |"


def _notes(summary: ContenderSummary) -> list[str]:
    notes = list(summary.problems)
    cached = summary.figures.get("cached_fraction")
    if summary.cache == "cold" and cached and cached.median > COLD_CACHED_NOTE_THRESHOLD:
        notes.insert(0, f"{cached.median:.0%} of the files stayed cached (pages that running processes map cannot be dropped)")
    return notes


def _spread(spread: Spread | None, show) -> str:
    if spread is None:
        return "–"
    if spread.count == 1:
        return show(spread.median)
    return f"{show(spread.median)} ({show(spread.minimum)}–{show(spread.maximum)})"


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _one_line(text: str, max_chars: int = 200) -> str:
    line = " ".join(text.split()).replace("|", "/")
    return line if len(line) <= max_chars else line[: max_chars - 1] + "…"
