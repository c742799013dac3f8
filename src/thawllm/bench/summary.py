"""Median, minimum and maximum of each figure, per model, contender and page cache state."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from thawllm.bench.records import OK, REPLICAS, SNAPSHOT, START, Measurement

START_FIGURES = ("ready_s", "first_response_s", "decode_tokens_per_s", "peak_rss_bytes", "cached_fraction")


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of the successful samples of one figure."""

    median: float
    minimum: float
    maximum: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread | None":
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    def to_dict(self) -> dict:
        return {"median": self.median, "min": self.minimum, "max": self.maximum, "n": self.count}


@dataclass
class ContenderSummary:
    """The figures of one contender for one model in one page cache state."""

    model: str
    contender: str
    cache: str
    figures: dict[str, Spread] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "contender": self.contender, "cache": self.cache,
            "figures": {name: spread.to_dict() for name, spread in self.figures.items()},
            "problems": self.problems,
        }


def summarize(measurements: list[Measurement]) -> list[ContenderSummary]:
    """Group the start runs by model, contender and cache, and attach replica and snapshot figures."""
    groups: dict[tuple[str, str, str], ContenderSummary] = {}
    for row in measurements:
        if row.kind != START:
            continue
        key = (row.model, row.contender, row.cache)
        summary = groups.setdefault(key, ContenderSummary(*key))
        if row.status != OK:
            summary.problems.append(f"{row.status}: {row.reason}")
    for summary in groups.values():
        rows = _matching(measurements, START, summary.model, summary.contender, summary.cache)
        for name in START_FIGURES:
            _add(summary, name, [getattr(row, name) for row in rows])
        _add_related(summary, measurements)
    return list(groups.values())


def _add_related(summary: ContenderSummary, measurements: list[Measurement]) -> None:
    """Attach the replica and snapshot figures, which are measured warm, to the warm summary."""
    if summary.cache != "warm":
        return
    replicas = _matching(measurements, REPLICAS, summary.model, summary.contender, None)
    _add(summary, "pss_total_bytes", [row.pss_total_bytes for row in replicas])
    summary.problems += [f"{row.replicas} replicas {row.status}: {row.reason}"
                         for row in _failed(measurements, REPLICAS, summary)]
    snapshots = _matching(measurements, SNAPSHOT, summary.model, summary.contender, None)
    _add(summary, "snapshot_s", [row.snapshot_s for row in snapshots])
    _add(summary, "snapshot_bytes", [row.snapshot_bytes for row in snapshots])
    summary.problems += [f"snapshot {row.status}: {row.reason}" for row in _failed(measurements, SNAPSHOT, summary)]


def _matching(measurements, kind, model, contender, cache) -> list[Measurement]:
    return [row for row in measurements
            if row.kind == kind and row.model == model and row.contender == contender
            and (cache is None or row.cache == cache) and row.status == OK]


def _failed(measurements, kind, summary) -> list[Measurement]:
    return [row for row in measurements
            if row.kind == kind and row.model == summary.model and row.contender == summary.contender
            and row.status != OK]


def _add(summary: ContenderSummary, name: str, values: list) -> None:
    spread = Spread.of([value for value in values if value is not None])
    if spread is not None:
        summary.figures[name] = spread
