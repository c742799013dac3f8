"""The gateway contenders: a request that reaches `thaw gateway` while no instance runs.

The gateway starts first and becomes ready. The clock starts when the
request is sent, because scaling from zero is about what that request
waits for, which is an instance restored by criu or started cold.
"""

from __future__ import annotations

from thawllm.bench import ports, probe
from thawllm.bench.catalog import BenchModel
from thawllm.bench.contenders import THAW, Contender, ContenderSkipped, Instance, RestoreContender, criu_problem
from thawllm.bench.measure import (
    MEASUREMENT_ERRORS, record_decode, record_memory, set_cache_state, stop_instances, wait_ports_released,
    wait_ready,
)
from thawllm.bench.processes import descendant_pids
from thawllm.bench.records import FAILED, SKIPPED, START, Measurement
from thawllm.bench.session import (
    DECODE_MAX_TOKENS, DECODE_PROMPT, FIRST_MAX_TOKENS, FIRST_PROMPT, REQUEST_TIMEOUT_S, Session, load_average_1m,
)

STATUS_PATH = "/gateway/status"
# Long enough that the instance is not stopped for idleness during a measurement.
IDLE_TIMEOUT_S = 3600
# Nothing is in flight when the benchmark stops a gateway, so its drain can be short.
DRAIN_TIMEOUT_S = 5


class GatewayContender(Contender):
    """`thaw gateway` with the criu starter (restoring SNAPSHOTS' file-backed snapshot) or the cold starter."""

    def __init__(self, starter: str, snapshots: RestoreContender | None = None):
        self.starter = starter
        self.snapshots = snapshots
        self.key = f"gateway-{starter}"
        self.label = f"thaw gateway ({starter} starter)"

    def prepare(self, model, tracker):
        if self.starter == "criu":
            problem = criu_problem()
            if problem:
                raise ContenderSkipped(problem)

    def source(self, model: BenchModel) -> str:
        if self.starter == "cold":
            return str(model.path)
        if self.snapshots is None or not self.snapshots.has_snapshot(model):
            raise ContenderSkipped(f"no file-backed snapshot of {model.key} was made; see the snapshot rows")
        return str(self.snapshots.snapshot_dir(model))

    def start(self, model, port_numbers, tracker, options):
        argv = [*THAW, "gateway", self.source(model), "--port", str(port_numbers[0]),
                "--starter", self.starter, "--idle-timeout", str(IDLE_TIMEOUT_S), "--max-instances", "1",
                "--drain-timeout", str(DRAIN_TIMEOUT_S), "--ctx-size", str(options.ctx_size)]
        if options.threads:
            argv += ["--threads", str(options.threads)]
        return [Instance(tracker.launch(argv, f"{self.key}-{model.key}"), port_numbers[0])]

    def cache_files(self, model):
        if self.starter == "criu" and self.snapshots is not None:
            return self.snapshots.cache_files(model)
        return [model.path]


def measure_gateway(contender: GatewayContender, session: Session, model: BenchModel, cache: str,
                    repetition: int) -> Measurement:
    """Start a gateway, then time one request from zero instances and a longer completion."""
    row = Measurement(START, model.key, contender.key, cache, repetition, load_average_1m=load_average_1m())
    port = ports.free_port()
    instances: list[Instance] = []
    try:
        instances = contender.start(model, [port], session.tracker, session.options)
        gateway = instances[0]
        row.ready_s = wait_ready(contender, session, gateway)
        row.cached_fraction = set_cache_state(contender.cache_files(model), cache)
        first = probe.predict(session.client, gateway.base_url, FIRST_PROMPT, FIRST_MAX_TOKENS, REQUEST_TIMEOUT_S)
        row.first_response_s = first.seconds
        record_decode(row, probe.complete(session.client, gateway.base_url, DECODE_PROMPT, DECODE_MAX_TOKENS,
                                          REQUEST_TIMEOUT_S))
        record_memory(row, instance_pid(session, gateway))
    except ContenderSkipped as exc:
        row.status, row.reason = SKIPPED, str(exc)
    except MEASUREMENT_ERRORS as exc:
        row.status, row.reason = FAILED, str(exc)
    finally:
        stop_instances(session, instances)
        row.ports_released = wait_ports_released([port])
    return row


def instance_pid(session: Session, gateway: Instance) -> int:
    """Return the pid of the gateway's one instance: the process that listens on the port the gateway reports."""
    status = session.client.get(gateway.base_url + STATUS_PATH, timeout=REQUEST_TIMEOUT_S).json()
    instance_ports = [entry["port"] for entry in status.get("instances", []) if entry.get("port")]
    if len(instance_ports) != 1:
        raise probe.ProbeError(f"{STATUS_PATH} lists {len(instance_ports)} instances with a port, not 1: {status}")
    launched = gateway.launched
    pid = ports.listener_pid(instance_ports[0], [launched.pid, *descendant_pids(launched.pid)])
    if pid is None:
        raise probe.ProbeError(f"No process under the gateway [pid {launched.pid}] listens on the instance "
                               f"port {instance_ports[0]} that {STATUS_PATH} reports.")
    launched.adopt(pid)
    return pid

