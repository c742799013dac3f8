"""Counters of the service, rendered in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Gauges:
    """Values read from the live service when the metrics are rendered."""

    queue_depth: int
    in_flight: int
    model_loaded: bool
    model_load_s: float | None


class Metrics:
    """Request, token and cancellation counters; updated from the event loop and the engine thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero the counters and restart the uptime, for example in a restored process."""
        with self._lock:
            self.started_at = time.monotonic()
            self._requests: Counter[tuple[str, int]] = Counter()
            self._prompt_tokens = 0
            self._generated_tokens = 0
            self._dropped = 0
            self._stopped = 0

    def count_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self._requests[endpoint, status] += 1

    def count_tokens(self, *, prompt: int, generated: int) -> None:
        with self._lock:
            self._prompt_tokens += prompt
            self._generated_tokens += generated

    def count_dropped(self) -> None:
        with self._lock:
            self._dropped += 1

    def count_stopped(self) -> None:
        with self._lock:
            self._stopped += 1

    def render(self, gauges: Gauges) -> str:
        with self._lock:
            lines = self._render_counters()
        lines += _render_gauges(gauges, time.monotonic() - self.started_at)
        return "\n".join(lines) + "\n"

    def _render_counters(self) -> list[str]:
        lines = _header("thaw_requests_total", "counter", "HTTP requests by endpoint and status code.")
        for (endpoint, status), count in sorted(self._requests.items()):
            lines.append(f'thaw_requests_total{{endpoint="{_escape(endpoint)}",status="{status}"}} {count}')
        lines += _metric("thaw_prompt_tokens_total", "counter", "Prompt tokens evaluated.", self._prompt_tokens)
        lines += _metric("thaw_generated_tokens_total", "counter", "Tokens generated.", self._generated_tokens)
        lines += _metric("thaw_requests_dropped_total", "counter",
                         "Queued requests dropped because their client left.", self._dropped)
        lines += _metric("thaw_generations_stopped_total", "counter",
                         "Generations stopped early because their client left.", self._stopped)
        return lines


def _render_gauges(gauges: Gauges, uptime_s: float) -> list[str]:
    lines = _metric("thaw_queue_depth", "gauge", "Requests waiting for the model.", gauges.queue_depth)
    lines += _metric("thaw_requests_in_flight", "gauge", "Requests generating now (0 or 1).", gauges.in_flight)
    lines += _metric("thaw_model_loaded", "gauge", "1 once the model serves, else 0.", int(gauges.model_loaded))
    if gauges.model_load_s is not None:
        lines += _metric("thaw_model_load_seconds", "gauge", "Time the model took to load.", gauges.model_load_s)
    lines += _metric("thaw_uptime_seconds", "gauge", "Time since the service started or was restored.", uptime_s)
    return lines


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _metric(name: str, kind: str, help_text: str, value: float) -> list[str]:
    return [*_header(name, kind, help_text), f"{name} {value}"]


def _escape(label_value: str) -> str:
    return label_value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
