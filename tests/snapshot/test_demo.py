"""thaw demo, the README's main job, end to end."""

import re
import subprocess
import sys


def test_demo_prints_both_times(criu):
    result = subprocess.run([sys.executable, "-m", "thawllm", "demo"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"start to ready\s+\d+ ms\s+\d+ ms", result.stdout)
    assert "same answer: yes" in result.stdout
