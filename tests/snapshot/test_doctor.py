"""`thaw doctor`'s findings on this machine, and its output for a person."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from thawllm.snapshot import locate
from thawllm.snapshot.doctor import FAIL, INFO, OK, Finding, diagnose, format_findings, main, snapshots_work

DOCTOR_SUBPROCESS_TIMEOUT_S = 120


@pytest.fixture
def own_verdict_cache(tmp_path, monkeypatch):
    """Keep self-test verdicts of a criu on PATH out of the machine's cache."""
    monkeypatch.setattr(locate, "ROOT_VERDICT_CACHE", tmp_path / "criu-selftest.json")


def statuses(findings: list[Finding]) -> dict[str, str]:
    return {finding.check: finding.status for finding in findings}


def test_diagnose_finds_working_snapshots(criu, own_verdict_cache, private_tmp, process_watch):
    findings = diagnose()
    by_check = {finding.check: finding for finding in findings}

    assert by_check["kernel"].status == INFO
    assert by_check["privileges"].status == OK
    assert by_check["criu"].status == OK
    assert by_check["self-test"].status == OK
    assert "dump" in by_check["self-test"].detail
    assert "ms" in by_check["self-test"].detail
    assert by_check["snapshots"].status == OK
    assert criu.describe() in by_check["snapshots"].detail
    assert snapshots_work(findings)
    assert process_watch.leftovers() == {}
    assert list(private_tmp.iterdir()) == []


def test_main_prints_checks_and_returns_zero(criu, own_verdict_cache, private_tmp, capsys):
    assert main(install_criu=False) == 0

    output = capsys.readouterr().out
    assert "OK    self-test" in output
    assert "OK    snapshots" in output
    assert "FAIL" not in output


def test_doctor_names_missing_thaw_criu(criu, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-such-criu"
    monkeypatch.setenv("THAW_CRIU", str(missing))

    findings = diagnose()
    assert statuses(findings)["criu"] == FAIL
    assert statuses(findings)["snapshots"] == FAIL
    assert "THAW_CRIU" in findings[-1].fix

    assert main(install_criu=True) == 1
    output = capsys.readouterr().out
    assert str(missing) in output
    assert "Not installing criu: THAW_CRIU is set" in output


def test_doctor_without_capabilities_says_what_to_do(criu, missing_prerequisite):
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        missing_prerequisite("setpriv (util-linux) is needed to drop capabilities")
    # Dropping the capabilities from the bounding set takes them from root's
    # effective set in the new program, as a container runtime would.
    command = [
        setpriv, "--bounding-set=-sys_admin,-checkpoint_restore", "--inh-caps=-all",
        sys.executable, "-c", "from thawllm.snapshot.doctor import main; raise SystemExit(main(True))",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=DOCTOR_SUBPROCESS_TIMEOUT_S, check=False
    )

    assert result.returncode == 1, result.stderr
    assert "FAIL  privileges" in result.stdout
    assert "CAP_SYS_ADMIN" in result.stdout
    assert "FAIL  snapshots" in result.stdout
    assert "Not installing criu" in result.stdout


def test_format_findings_indents_details_and_fix():
    findings = [
        Finding("criu", OK, "criu 4.1.1 (private prefix /var/lib/thaw/criu)"),
        Finding(
            "self-test", FAIL, "criu dump failed with exit code 1.\n  Error (criu/vdso.c:381): bad", "Install."
        ),
    ]

    lines = format_findings(findings).splitlines()

    assert lines[0] == "  OK    criu        criu 4.1.1 (private prefix /var/lib/thaw/criu)"
    assert lines[1] == "  FAIL  self-test   criu dump failed with exit code 1."
    assert lines[2] == "                      Error (criu/vdso.c:381): bad"
    assert lines[3] == "                    fix: Install."


def test_doctor_fails_criu_that_only_pretends(criu, tmp_path, monkeypatch, private_tmp, process_watch):
    # Exits 0 and prints a version for every command, so its "dump" leaves the process running.
    pretender = tmp_path / "criu"
    pretender.write_text('#!/bin/sh\necho "Version: 9.9"\n')
    pretender.chmod(0o755)
    monkeypatch.setenv("THAW_CRIU", str(pretender))

    findings = diagnose()
    by_check = {finding.check: finding for finding in findings}
    assert by_check["self-test"].status == FAIL
    assert "still runs" in by_check["self-test"].detail
    assert by_check["snapshots"].status == FAIL
    assert process_watch.leftovers() == {}
