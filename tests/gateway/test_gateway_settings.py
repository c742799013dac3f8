"""The gateway's settings checks, capacity estimate and command-line errors; no instance starts here."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from thawllm.engine.base import EngineSettings
from thawllm.gateway.capacity import default_capacity, estimate_instance_memory
from thawllm.gateway.metrics import Histogram
from thawllm.gateway.model_shape import ModelShapeError, read_model_shape
from thawllm.gateway.settings import GatewaySettingsError, ScalingSettings
from thawllm.models.files import bundled_model_path

THAW_COMMAND = Path(sys.executable).with_name("thaw")
COMMAND_TIMEOUT_S = 60.0


def test_bundled_model_shape():
    shape = read_model_shape(bundled_model_path())

    # SmolLM2-135M: 30 layers of width 576, 9 query heads sharing 3 KV heads, 49152 tokens.
    assert (shape.layers, shape.embedding_length, shape.head_count, shape.head_count_kv, shape.vocab_size) == (
        30, 576, 9, 3, 49152)
    assert shape.kv_bytes_per_token() == 2 * 30 * 3 * 64 * 2


def test_model_shape_of_non_gguf(tmp_path):
    path = tmp_path / "not.gguf"
    path.write_bytes(b"NOPE" + b"\0" * 64)

    with pytest.raises(ModelShapeError, match="not a GGUF file"):
        read_model_shape(path)


def test_instance_memory_grows_with_context():
    small = estimate_instance_memory(EngineSettings(bundled_model_path(), ctx_size=512))
    large = estimate_instance_memory(EngineSettings(bundled_model_path(), ctx_size=4096))

    assert large.kv_cache_bytes == 8 * small.kv_cache_bytes
    assert small.model_bytes == bundled_model_path().stat().st_size


def test_default_capacity_explains_itself():
    capacity = default_capacity(EngineSettings(bundled_model_path()))

    assert capacity.max_instances >= 1
    assert f"--max-instances {capacity.max_instances}" in capacity.explanation
    assert "cores" in capacity.explanation
    assert "MiB per instance" in capacity.explanation


@pytest.mark.parametrize("values, message", [
    ({"target_concurrency": 0}, "Invalid --target-concurrency 0"),
    ({"min_instances": 3, "max_instances": 2}, "Invalid --min-instances 3: pass at most --max-instances (2)"),
    ({"max_instances": 0}, "Invalid --max-instances 0"),
    ({"idle_timeout_s": 0}, "Invalid --idle-timeout 0"),
    ({"max_queue": -1}, "Invalid --max-queue -1"),
    ({"queue_timeout_s": -2.0}, "Invalid --queue-timeout -2.0"),
])
def test_invalid_scaling_rejected(values, message):
    with pytest.raises(GatewaySettingsError) as raised:
        ScalingSettings(**values)
    assert message in str(raised.value)


def test_histogram_buckets_are_cumulative():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 5.0):
        histogram.observe(value)

    lines = histogram.render("latency", 'starter="cold"')

    assert 'latency_bucket{starter="cold",le="0.1"} 1' in lines
    assert 'latency_bucket{starter="cold",le="1"} 2' in lines
    assert 'latency_bucket{starter="cold",le="+Inf"} 3' in lines
    assert 'latency_count{starter="cold"} 3' in lines


def run_gateway_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(THAW_COMMAND), "gateway", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)


def test_command_rejects_invalid_option():
    result = run_gateway_command("--port", "0", "--max-instances", "0")

    assert result.returncode == 2
    assert "Invalid --max-instances 0: pass 1 or more." in result.stderr


def test_command_rejects_missing_source(tmp_path):
    result = run_gateway_command(str(tmp_path / "missing.gguf"), "--port", "0")

    assert result.returncode == 2
    assert "Model file not found" in result.stderr
    assert "missing.gguf" in result.stderr


def test_command_rejects_directory_without_manifest(tmp_path):
    result = run_gateway_command(str(tmp_path), "--port", "0")

    assert result.returncode == 2
    assert "snapshot.json is missing" in result.stderr


def test_command_rejects_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_gateway_command("--port", str(port), "--starter", "cold")

    assert result.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr


def test_command_criu_starter_cannot_snapshot_broken_model(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 4096)

    result = run_gateway_command(str(broken), "--port", "0", "--starter", "criu",
                                 "--snapshot-cache", str(tmp_path / "cache"))

    assert result.returncode == 2
    assert "--starter criu cannot work here" in result.stderr
    assert "Pass --starter auto or --starter cold" in result.stderr
    # No half-written snapshot is left in the cache.
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []
