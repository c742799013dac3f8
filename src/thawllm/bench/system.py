"""The machine and software a benchmark ran on, for the report's header."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from pathlib import Path

from thawllm import __version__
from thawllm.bench import pagecache
from thawllm.bench.memory import total_bytes

BANDWIDTH_SAMPLES = 3


def describe_system() -> dict:
    """Return the date, CPU, cores, memory, kernel and versions of thaw, llama-cpp-python and criu."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": total_bytes(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "thaw": __version__,
        "llama_cpp_python": _distribution_version("llama-cpp-python"),
        "criu": criu_version(),
        "load_average_1m_at_start": os.getloadavg()[0],
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def criu_version() -> str:
    from thawllm.snapshot.criu import Criu, CriuError

    try:
        criu = Criu.find()
        return f"{criu.version} ({criu.origin})"
    except CriuError as exc:
        return f"not available: {str(exc).splitlines()[0]}"
    except ImportError as exc:
        return f"not available: thaw's criu support failed to import ({exc})"


def measure_disk_bandwidth(path: Path) -> dict:
    """Read PATH from disk BANDWIDTH_SAMPLES times and return the median bandwidth in bytes per second."""
    samples = []
    direct = True
    for _ in range(BANDWIDTH_SAMPLES):
        bandwidth, used_direct = pagecache.read_bandwidth(path)
        samples.append(bandwidth)
        direct = direct and used_direct
    return {
        "file": str(path),
        "bytes_per_s": statistics.median(samples),
        "samples_bytes_per_s": samples,
        "o_direct": direct,
    }


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
