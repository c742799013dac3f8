"""The gateway's own counters, rendered in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds of the start latency buckets, in seconds: restores take tens of
# milliseconds and cold starts of large models take minutes.
START_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Histogram:
    """Cumulative bucket counts, sum and count of observed values."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.bucket_counts = [0] * len(bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.bucket_counts[index] += 1

    def render(self, name: str, labels: str) -> list[str]:
        lines = [f'{name}_bucket{{{labels},le="{bound:g}"}} {count}'
                 for bound, count in zip(self.bounds, self.bucket_counts)]
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


@dataclass(frozen=True)
class PoolGauges:
    """Values read from the instance pool when the metrics are rendered."""

    instances_by_state: dict[str, int]
    held_requests: int
    in_flight_requests: int
    max_instances: int


class GatewayMetrics:
    """Counters of the gateway. Only the event loop updates them, so they need no lock."""

    def __init__(self) -> None:
        self.requests_by_status: Counter[int] = Counter()
        self.starts: Counter[str] = Counter()
        self.start_failures: Counter[str] = Counter()
        self.start_seconds: dict[str, Histogram] = {}
        self.instance_exits: Counter[str] = Counter()

    def count_request(self, status: int) -> None:
        self.requests_by_status[status] += 1

    def observe_start(self, starter: str, seconds: float) -> None:
        self.starts[starter] += 1
        self.start_seconds.setdefault(starter, Histogram(START_BUCKETS_S)).observe(seconds)

    def count_start_failure(self, starter: str) -> None:
        self.start_failures[starter] += 1

    def count_exit(self, reason: str) -> None:
        self.instance_exits[reason] += 1

    def render(self, gauges: PoolGauges) -> str:
        lines: list[str] = []
        _family(lines, "thaw_gateway_instances", "gauge", "Instances by state.",
                [(f'state="{state}"', count) for state, count in gauges.instances_by_state.items()])
        _family(lines, "thaw_gateway_max_instances", "gauge", "Upper bound on instances.",
                [("", gauges.max_instances)])
        _family(lines, "thaw_gateway_held_requests", "gauge", "Requests waiting for an instance.",
                [("", gauges.held_requests)])
        _family(lines, "thaw_gateway_in_flight_requests", "gauge", "Requests forwarded to an instance and not finished.",
                [("", gauges.in_flight_requests)])
        _family(lines, "thaw_gateway_requests_total", "counter", "Requests answered, by HTTP status.",
                [(f'code="{code}"', count) for code, count in sorted(self.requests_by_status.items())])
        _family(lines, "thaw_gateway_instance_starts_total", "counter", "Instances started (cold starts), by starter.",
                [(f'starter="{name}"', count) for name, count in sorted(self.starts.items())])
        _family(lines, "thaw_gateway_instance_start_failures_total", "counter", "Failed instance starts, by starter.",
                [(f'starter="{name}"', count) for name, count in sorted(self.start_failures.items())])
        _family(lines, "thaw_gateway_instance_exits_total", "counter",
                "Instances gone, by reason: idle, failed (exited unexpectedly) or shutdown.",
                [(f'reason="{reason}"', count) for reason, count in sorted(self.instance_exits.items())])
        lines.append("# HELP thaw_gateway_instance_start_seconds Time from the decision to start an "
                     "instance until it serves, by starter.")
        lines.append("# TYPE thaw_gateway_instance_start_seconds histogram")
        for name, histogram in sorted(self.start_seconds.items()):
            lines.extend(histogram.render("thaw_gateway_instance_start_seconds", f'starter="{name}"'))
        return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
