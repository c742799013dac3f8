"""Engine options on the command line: a value llama.cpp cannot use is rejected before loading."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMAND_TIMEOUT_S = 60.0


def run_thaw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thawllm", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("option, value, accepted", [
    ("--ctx-size", "-5", "0 or more"),
    ("--batch-size", "0", "1 or more"),
    ("--batch-size", "-1", "1 or more"),
    ("--threads", "-3", "0 or more"),
    ("--ctx-size", "many", "invalid integer"),
])
@pytest.mark.parametrize("command", ["serve", "snapshot"])
def test_invalid_engine_option_rejected(tmp_path, command, option, value, accepted):
    extra = ["-o", str(tmp_path / "snapshot")] if command == "snapshot" else ["--port", "0"]
    result = run_thaw(command, *extra, option, value)
    assert result.returncode == 2, result.stderr
    assert option in result.stderr
    assert accepted in result.stderr
    assert "Loading model" not in result.stderr
    assert "GGUF" not in result.stderr
