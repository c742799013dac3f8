"""The order of a benchmark run: per model, snapshots first, then repetitions of every contender."""

from __future__ import annotations

import logging
from pathlib import Path

from thawllm.bench.catalog import BenchModel
from thawllm.bench.contenders import (
    Contender, ContenderSkipped, FlaskContender, RestoreContender, ServeContender,
)
from thawllm.bench.gateway import GatewayContender, measure_gateway
from thawllm.bench.measure import measure_launch, measure_replicas
from thawllm.bench.records import FAILED, SKIPPED, SNAPSHOT, START, Measurement
from thawllm.bench.session import SNAPSHOT_TIMEOUT_S, Session, load_average_1m

logger = logging.getLogger("thaw.bench")


def build_contenders(workspace: Path) -> list[Contender]:
    file_backed = RestoreContender(workspace, repack=False)
    return [
        FlaskContender(),
        ServeContender(),
        file_backed,
        RestoreContender(workspace, repack=True),
        GatewayContender("criu", snapshots=file_backed),
        GatewayContender("cold"),
    ]


def planned_measurements(session: Session, models: list[BenchModel], contenders: list[Contender]) -> int:
    settings = session.settings
    per_model = len(contenders) * settings.repeat * len(settings.caches)
    per_model += sum(settings.repeat for contender in contenders if isinstance(contender, RestoreContender))
    per_model += sum(1 for contender in contenders if not isinstance(contender, GatewayContender))
    return per_model * len(models)


def run_benchmark(session: Session, models: list[BenchModel], contenders: list[Contender]) -> None:
    session.planned = planned_measurements(session, models, contenders)
    for model in models:
        try:
            run_model(session, model, contenders)
        finally:
            for contender in contenders:
                contender.cleanup()


def run_model(session: Session, model: BenchModel, contenders: list[Contender]) -> None:
    if model.skip_reason:
        for contender in contenders:
            _record_skipped(session, model, contender, model.skip_reason)
        return
    runnable = [contender for contender in contenders if _prepared(session, model, contender)]
    for contender in runnable:
        if isinstance(contender, RestoreContender):
            make_snapshots(session, model, contender)

    for repetition in range(session.settings.repeat):
        for cache in session.settings.caches:
            for contender in runnable:
                session.record(measure_start(contender, session, model, cache, repetition))
    for contender in runnable:
        if not isinstance(contender, GatewayContender):
            session.record(measure_replicas(contender, session, model))


def measure_start(contender: Contender, session: Session, model: BenchModel, cache: str,
                  repetition: int) -> Measurement:
    if isinstance(contender, GatewayContender):
        return measure_gateway(contender, session, model, cache, repetition)
    return measure_launch(contender, session, model, cache, repetition)


def make_snapshots(session: Session, model: BenchModel, contender: RestoreContender) -> None:
    """Take the snapshot once per repetition, for its figures; the restores use the last one."""
    for repetition in range(session.settings.repeat):
        row = Measurement(SNAPSHOT, model.key, contender.key, "", repetition, load_average_1m=load_average_1m())
        try:
            figures = contender.create_snapshot(model, session.tracker, session.options, SNAPSHOT_TIMEOUT_S)
            row.snapshot_s, row.snapshot_bytes = figures.seconds, figures.size_bytes
        except (ContenderSkipped, OSError) as exc:
            row.status, row.reason = FAILED, str(exc)
        session.record(row)


def _prepared(session: Session, model: BenchModel, contender: Contender) -> bool:
    try:
        contender.prepare(model, session.tracker)
    except ContenderSkipped as exc:
        _record_skipped(session, model, contender, str(exc))
        return False
    return True


def _record_skipped(session: Session, model: BenchModel, contender: Contender, reason: str) -> None:
    for cache in session.settings.caches:
        session.record(Measurement(START, model.key, contender.key, cache, 0, status=SKIPPED, reason=reason))
