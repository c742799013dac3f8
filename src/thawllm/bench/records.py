"""One row per measurement: what was measured, how it ended, and its figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Kinds of measurement.
START = "start"
REPLICAS = "replicas"
SNAPSHOT = "snapshot"
# Outcomes: skipped means a prerequisite is missing here; failed means an error during the run.
OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass
class Measurement:
    """Figures of one measurement; those that do not apply to its kind stay None.

    Times are in seconds from the launch of the contender's process, except
    for the gateway, whose first response counts from the request that
    reaches it with no instance running.
    """

    kind: str
    model: str
    contender: str
    cache: str
    repetition: int
    status: str = OK
    reason: str = ""
    ready_s: float | None = None
    first_response_s: float | None = None
    decode_tokens: int | None = None
    decode_s: float | None = None
    decode_tokens_per_s: float | None = None
    peak_rss_bytes: int | None = None
    # Resident anonymous memory after the completions, which replicas of the process cannot share.
    anonymous_rss_bytes: int | None = None
    replicas: int | None = None
    pss_total_bytes: int | None = None
    snapshot_s: float | None = None
    snapshot_bytes: int | None = None
    # Share of the model (and snapshot) bytes in the page cache just before the launch.
    cached_fraction: float | None = None
    ports_released: bool | None = None
    load_average_1m: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Measurement":
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


FIELD_NAMES = [field.name for field in fields(Measurement)]
