"""The gateway's warm-path overhead: the same requests through the gateway and straight to its instance."""

from __future__ import annotations

import logging
import sys

from thawllm.bench.catalog import BenchModel
from thawllm.bench.contenders import criu_problem

logger = logging.getLogger("thaw.bench")

# Requests of each probe through the gateway, and as many straight to the instance.
FULL_REQUESTS = 200
QUICK_REQUESTS = 20


def measure_overhead(model: BenchModel, quick: bool, threads: int | None) -> list[dict]:
    """Return one record per starter: first responses from zero and warm p50/p99 latencies."""
    from thawllm.gateway.measure import MeasureError, measure_gateway

    problem = criu_problem()
    records = []
    for starter in ("criu", "cold"):
        if starter == "criu" and problem:
            records.append({"starter": starter, "skipped": problem})
            continue
        print(f"Gateway warm path: {model.label}, {starter} starter...", file=sys.stderr, flush=True)
        try:
            figures = measure_gateway(str(model.path), starter, QUICK_REQUESTS if quick else FULL_REQUESTS,
                                      threads=threads)
        except MeasureError as exc:
            logger.error("Gateway measurement with the %s starter failed: %s", starter, exc)
            records.append({"starter": starter, "failed": str(exc)})
            continue
        records.append({"model": model.label, **figures})
    return records


def overhead_lines(records: list[dict]) -> list[str]:
    """Return the Markdown section of the gateway's warm-path overhead."""
    if not records:
        return []
    lines = ["## Gateway warm path", "",
             "Latency of warm requests through `thaw gateway` and straight to its instance, alternating, "
             "and the first response of a request that reaches the gateway with no instance running.", "",
             "| Starter | Probe | Direct p50 | Gateway p50 | Overhead p50 | Direct p99 | Gateway p99 | "
             "Overhead p99 | First response from zero (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for record in records:
        if "warm" not in record:
            reason = record.get("skipped") or record.get("failed")
            lines.append(f"| {record['starter']} | – | – | – | – | – | – | – | {reason} |")
            continue
        first = f"{record['first_response_median_s'] * 1000:.0f} ms"
        for probe, figures in record["warm"].items():
            lines.append(
                f"| {record['starter']} | {probe} | {figures['direct_p50_ms']:.2f} ms | "
                f"{figures['gateway_p50_ms']:.2f} ms | {figures['overhead_p50_ms']:.2f} ms | "
                f"{figures['direct_p99_ms']:.2f} ms | {figures['gateway_p99_ms']:.2f} ms | "
                f"{figures['overhead_p99_ms']:.2f} ms | {first} |")
    return lines + [""]
