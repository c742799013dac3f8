"""Measurements that launch a contender: one instance from launch to its figures, or several replicas."""

from __future__ import annotations

import logging
import time

import httpx

from thawllm.bench import pagecache, ports, probe
from thawllm.bench.catalog import BenchModel
from thawllm.bench.contenders import Contender, ContenderSkipped, Instance
from thawllm.bench.memory import (
    MemoryReadError, anonymous_rss_bytes, available_bytes, peak_rss_bytes, pss_bytes,
)
from thawllm.bench.processes import descendant_pids
from thawllm.bench.records import FAILED, REPLICAS, SKIPPED, START, Measurement
from thawllm.bench.session import (
    DECODE_MAX_TOKENS, DECODE_PROMPT, FIRST_MAX_TOKENS, FIRST_PROMPT, PORT_RELEASE_TIMEOUT_S,
    READY_TIMEOUT_S, REQUEST_TIMEOUT_S, Session, load_average_1m,
)

logger = logging.getLogger("thaw.bench")

WARM = "warm"
COLD = "cold"
PORT_POLL_INTERVAL_S = 0.05
# Memory kept free beside the replicas, and per replica beside its weights (context, Python, buffers).
MEMORY_MARGIN_BYTES = 2 << 30
REPLICA_OVERHEAD_BYTES = 512 << 20

# Errors that end one measurement, which is then recorded as failed.
MEASUREMENT_ERRORS = (probe.ProbeError, httpx.HTTPError, MemoryReadError, pagecache.PageCacheError, OSError)


def measure_launch(contender: Contender, session: Session, model: BenchModel, cache: str,
                   repetition: int) -> Measurement:
    """Launch one instance and time it until ready, its first response and a longer completion."""
    row = Measurement(START, model.key, contender.key, cache, repetition, load_average_1m=load_average_1m())
    port = ports.free_port()
    instances: list[Instance] = []
    try:
        row.cached_fraction = set_cache_state(contender.cache_files(model), cache)
        instances = contender.start(model, [port], session.tracker, session.options)
        instance = instances[0]
        row.ready_s = wait_ready(contender, session, instance)
        probe.predict(session.client, instance.base_url, FIRST_PROMPT, FIRST_MAX_TOKENS, REQUEST_TIMEOUT_S)
        row.first_response_s = instance.launched.elapsed_s()
        record_decode(row, contender.decode(session.client, instance, DECODE_PROMPT, DECODE_MAX_TOKENS,
                                            REQUEST_TIMEOUT_S))
        record_memory(row, serving_pid(instance))
    except ContenderSkipped as exc:
        row.status, row.reason = SKIPPED, str(exc)
    except MEASUREMENT_ERRORS as exc:
        row.status, row.reason = FAILED, str(exc)
    finally:
        stop_instances(session, instances)
        row.ports_released = wait_ports_released([port])
    return row


def measure_replicas(contender: Contender, session: Session, model: BenchModel) -> Measurement:
    """Start N replicas, send each one request, and sum their proportional set sizes."""
    count = session.settings.replicas
    row = Measurement(REPLICAS, model.key, contender.key, WARM, 0, replicas=count,
                      load_average_1m=load_average_1m())
    shortage = memory_shortage(contender, model, count, session.measurements)
    if shortage:
        row.status, row.reason = SKIPPED, shortage
        return row
    replica_ports = ports.free_ports(count)
    instances: list[Instance] = []
    try:
        row.cached_fraction = set_cache_state(contender.cache_files(model), WARM)
        instances = contender.start(model, replica_ports, session.tracker, session.options)
        row.ready_s = max(wait_ready(contender, session, instance) for instance in instances)
        for instance in instances:
            probe.predict(session.client, instance.base_url, FIRST_PROMPT, FIRST_MAX_TOKENS, REQUEST_TIMEOUT_S)
        row.pss_total_bytes = sum(pss_bytes(pid) for pid in distinct_serving_pids(instances))
    except ContenderSkipped as exc:
        row.status, row.reason = SKIPPED, str(exc)
    except MEASUREMENT_ERRORS as exc:
        row.status, row.reason = FAILED, str(exc)
    finally:
        stop_instances(session, instances)
        row.ports_released = wait_ports_released(replica_ports)
    return row


def memory_shortage(contender: Contender, model: BenchModel, count: int,
                    measured: list[Measurement]) -> str | None:
    """Return why COUNT replicas might not fit in the free memory, or None when they fit.

    Each replica needs the private memory that one instance of the
    contender held in its start runs; the model file's pages are shared.
    Without such a run, replicas that copy their weights are assumed to
    need the model's size each.
    """
    private = [row.anonymous_rss_bytes for row in measured
               if row.kind == START and row.model == model.key and row.contender == contender.key
               and row.anonymous_rss_bytes]
    if private:
        per_replica = max(private)
    else:
        per_replica = REPLICA_OVERHEAD_BYTES + (model.size_bytes if contender.private_weights else 0)
    needed = per_replica * count + model.size_bytes + MEMORY_MARGIN_BYTES
    available = available_bytes()
    if available >= needed:
        return None
    return (f"{count} replicas of {model.key} may need {needed / 1e9:.1f} GB but only "
            f"{available / 1e9:.1f} GB is available; skipped rather than risk the OOM killer")


def set_cache_state(files: list, cache: str) -> float:
    """Warm or drop the page cache of FILES; return the share of their bytes cached afterwards."""
    if cache == COLD:
        pagecache.drop_pages(files)
    else:
        pagecache.warm_pages(files)
    return pagecache.cached_fraction_of(files)


def wait_ready(contender: Contender, session: Session, instance: Instance) -> float:
    return probe.wait_until_ready(session.client, instance.base_url + contender.health_path, instance.launched,
                                  READY_TIMEOUT_S, require_ok=contender.require_ok)


def record_memory(row: Measurement, pid: int) -> None:
    row.peak_rss_bytes = peak_rss_bytes(pid)
    row.anonymous_rss_bytes = anonymous_rss_bytes(pid)


def record_decode(row: Measurement, completion: probe.Completion) -> None:
    row.decode_s = completion.seconds
    row.decode_tokens = completion.completion_tokens
    if completion.completion_tokens:
        row.decode_tokens_per_s = completion.completion_tokens / completion.seconds


def serving_pid(instance: Instance) -> int:
    """Return the pid that listens on the instance's port, and track it for the clean-up.

    Only the launched process and its descendants are candidates; `thaw
    restore` is the child subreaper of the replicas that criu restores.
    """
    launched = instance.launched
    candidates = [launched.pid, *descendant_pids(launched.pid)]
    pid = ports.listener_pid(instance.port, candidates)
    if pid is None:
        raise probe.ProbeError(f"No process started by {launched.name} [pid {launched.pid}] "
                               f"listens on port {instance.port}.")
    launched.adopt(pid)
    return pid


def distinct_serving_pids(instances: list[Instance]) -> list[int]:
    pids = [serving_pid(instance) for instance in instances]
    if len(set(pids)) != len(pids):
        raise probe.ProbeError(f"Replicas share serving processes: pids {pids} for ports "
                               f"{[instance.port for instance in instances]}.")
    return pids


def stop_instances(session: Session, instances: list[Instance]) -> None:
    for launched in {id(instance.launched): instance.launched for instance in instances}.values():
        session.tracker.stop(launched)


def wait_ports_released(port_numbers: list[int], timeout_s: float = PORT_RELEASE_TIMEOUT_S) -> bool:
    """Wait until nothing listens on PORT_NUMBERS; return False if something still does."""
    deadline = time.monotonic() + timeout_s
    while not all(ports.port_is_free(port) for port in port_numbers):
        if time.monotonic() >= deadline:
            logger.error("Ports %s are still in use %.0f s after their processes were stopped.",
                         port_numbers, timeout_s)
            return False
        time.sleep(PORT_POLL_INTERVAL_S)
    return True
