"""The default --max-instances: as many instances as the cores and the free memory allow."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from thawllm.engine.base import EngineSettings
from thawllm.gateway.model_shape import ModelShapeError, read_model_shape

logger = logging.getLogger("thaw.gateway")

MIB = 1 << 20
# Share of the available memory that instances may take; the rest stays for the page cache and others.
MEMORY_USE_FRACTION = 0.8
# Python, llama.cpp, Starlette and uvicorn in one service process, apart from the model
# and its context. NOTE: an estimate. A SmolLM2 instance at ctx 2048 had 219 MiB resident
# after a request, 94 MiB of it the model file, and other builds or libraries may need more.
PROCESS_OVERHEAD_BYTES = 100 * MIB
LOGIT_BYTES = 4

MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class InstanceMemory:
    """Estimated memory of one instance, by part."""

    model_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    process_bytes: int = PROCESS_OVERHEAD_BYTES

    @property
    def total(self) -> int:
        return self.model_bytes + self.kv_cache_bytes + self.compute_bytes + self.process_bytes

    def describe(self) -> str:
        return (f"{self.total / MIB:.0f} MiB per instance = model {self.model_bytes / MIB:.0f} MiB"
                f" + KV cache {self.kv_cache_bytes / MIB:.0f} MiB + compute buffers"
                f" {self.compute_bytes / MIB:.0f} MiB + process {self.process_bytes / MIB:.0f} MiB")


@dataclass(frozen=True)
class Capacity:
    """The computed default of --max-instances and how it was reached."""

    max_instances: int
    explanation: str


def estimate_instance_memory(engine: EngineSettings) -> InstanceMemory:
    """Estimate one instance's memory; the model file counts whole for each instance.

    Instances map the model file and share its pages in the page cache, so
    counting it per instance overstates the need: the estimate errs on the safe side.
    """
    model_bytes = engine.model_path.stat().st_size
    try:
        shape = read_model_shape(engine.model_path)
    except ModelShapeError as exc:
        logger.warning("%s; estimating the context memory as the model size.", exc)
        return InstanceMemory(model_bytes, model_bytes, 0)
    kv_cache = engine.ctx_size * shape.kv_bytes_per_token()
    # llama.cpp's compute buffer contains at least the logits of one batch.
    compute = engine.batch_size * shape.vocab_size * LOGIT_BYTES
    return InstanceMemory(model_bytes, kv_cache, compute)


def default_capacity(engine: EngineSettings) -> Capacity:
    cores = available_cores()
    memory = available_memory_bytes()
    per_instance = estimate_instance_memory(engine)
    by_memory = int(memory * MEMORY_USE_FRACTION // per_instance.total)
    count = max(1, min(cores, by_memory))
    explanation = (
        f"--max-instances {count}: the lower of {cores} cores and {by_memory} instances by memory "
        f"({MEMORY_USE_FRACTION:.0%} of {memory / MIB:.0f} MiB available, "
        f"{per_instance.describe()}, an estimate)"
    )
    return Capacity(count, explanation)


def available_cores() -> int:
    """Return the cores this process may run on, lowered by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = (CGROUP_ROOT / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def available_memory_bytes() -> int:
    """Return MemAvailable, lowered by the room left under a cgroup v2 memory limit."""
    available = _meminfo_bytes("MemAvailable")
    try:
        limit = (CGROUP_ROOT / "memory.max").read_text().strip()
        current = int((CGROUP_ROOT / "memory.current").read_text())
    except (OSError, ValueError):
        return available
    if limit == "max":
        return available
    return max(0, min(available, int(limit) - current))


def _meminfo_bytes(field: str) -> int:
    for line in MEMINFO.read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) * 1024
    raise OSError(f"{MEMINFO} has no {field} line")
