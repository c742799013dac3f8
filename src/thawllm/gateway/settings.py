"""Settings of the gateway, checked once when it starts."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


class GatewaySettingsError(ValueError):
    """A gateway option has an invalid value."""


@dataclass(frozen=True)
class ScalingSettings:
    """How many instances run, and how long requests may wait for one."""

    target_concurrency: int = 1
    min_instances: int = 0
    max_instances: int = 1
    idle_timeout_s: float = 60.0
    max_queue: int = 64
    queue_timeout_s: float = 30.0
    start_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        _require(self.target_concurrency >= 1, "--target-concurrency", self.target_concurrency, "1 or more")
        _require(self.min_instances >= 0, "--min-instances", self.min_instances, "0 or more")
        _require(self.max_instances >= 1, "--max-instances", self.max_instances, "1 or more")
        _require(self.min_instances <= self.max_instances, "--min-instances", self.min_instances,
                 f"at most --max-instances ({self.max_instances})")
        _require(self.idle_timeout_s > 0, "--idle-timeout", self.idle_timeout_s, "a number of seconds above 0")
        _require(self.max_queue >= 0, "--max-queue", self.max_queue, "0 or more")
        _require(self.queue_timeout_s > 0, "--queue-timeout", self.queue_timeout_s,
                 "a number of seconds above 0")
        _require(self.start_timeout_s > 0, "--start-timeout", self.start_timeout_s,
                 "a number of seconds above 0")


@dataclass(frozen=True)
class GatewaySettings:
    """Listening address and request handling of the gateway; the API key is kept out of repr()."""

    host: str = "127.0.0.1"
    port: int = 8080
    starter: str = "auto"
    drain_timeout_s: float = 30.0
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, "--port", self.port, "a number from 0 to 65535")
        _require(self.drain_timeout_s >= 0, "--drain-timeout", self.drain_timeout_s, "0 or more seconds")


def scaling_from(args: argparse.Namespace, max_instances: int) -> ScalingSettings:
    return ScalingSettings(
        target_concurrency=args.target_concurrency,
        min_instances=args.min_instances,
        max_instances=max_instances,
        idle_timeout_s=args.idle_timeout,
        max_queue=args.max_queue,
        queue_timeout_s=args.queue_timeout,
        start_timeout_s=args.start_timeout,
    )


def _require(condition: bool, option: str, value, expected: str) -> None:
    if not condition:
        raise GatewaySettingsError(f"Invalid {option} {value}: pass {expected}.")
