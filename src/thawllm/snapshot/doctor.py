"""`thaw doctor`: check whether snapshots can work on this machine, and report why not."""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from thawllm.snapshot import locate
from thawllm.snapshot.criu import INSTALL_HINT, Criu, CriuError, CriuFailed, CriuNotFound, privilege_problem
from thawllm.snapshot.provision import ProvisionError, default_prefix, install_private_criu
from thawllm.snapshot.selftest import run_selftest

OK, FAIL, INFO = "OK", "FAIL", "INFO"
SNAPSHOTS_CHECK = "snapshots"
CHECK_COLUMN_WIDTH = 12


@dataclass(frozen=True)
class Finding:
    """The result of one check: its name, OK/FAIL/INFO, what was found and the fix."""

    check: str
    status: str
    detail: str
    fix: str = ""


def diagnose() -> list[Finding]:
    """Check privileges and each reachable criu until one dumps and restores a process."""
    findings = [Finding("kernel", INFO, f"Linux {platform.release()} ({platform.machine()})")]
    problem = privilege_problem()
    if problem:
        findings.append(Finding("privileges", FAIL, problem))
        findings.append(Finding(SNAPSHOTS_CHECK, FAIL, "Snapshots cannot work without these privileges."))
        return findings
    findings.append(Finding("privileges", OK, f"uid {os.geteuid()} with CAP_SYS_ADMIN"))

    candidates = list(_candidates(findings))
    for criu, path_binary in candidates:
        if _criu_works(criu, path_binary, findings):
            findings.append(Finding(SNAPSHOTS_CHECK, OK, f"Snapshots work here with {criu.describe()}."))
            return findings

    findings.append(_no_working_criu(candidates))
    return findings


def _no_working_criu(candidates: list[tuple[Criu, Path | None]]) -> Finding:
    if os.environ.get(locate.CRIU_ENV):
        return Finding(
            SNAPSHOTS_CHECK, FAIL,
            f"thaw uses only the criu that {locate.CRIU_ENV} names, and it does not work here.",
            f"Correct {locate.CRIU_ENV}, or unset it to use criu from PATH or the private criu.",
        )
    if not candidates:
        detail = f"No criu found: none on PATH and no private criu in {default_prefix()}."
        return Finding(SNAPSHOTS_CHECK, FAIL, detail, INSTALL_HINT)
    if locate.private_criu() is None:
        return Finding(SNAPSHOTS_CHECK, FAIL, "No criu here could dump and restore a process.", INSTALL_HINT)
    return Finding(
        SNAPSHOTS_CHECK, FAIL,
        f"No criu here could dump and restore a process, not even the private criu in {default_prefix()}.",
        "Read the errors above; the log named there has the details.",
    )


def snapshots_work(findings: list[Finding]) -> bool:
    return any(f.check == SNAPSHOTS_CHECK and f.status == OK for f in findings)


def main(install_criu: bool) -> int:
    """Print the checks for a person; return 0 when snapshots work here, else 1.

    With `install_criu`, a machine without a working criu gets the private
    criu installed, and the checks run again.
    """
    print("thaw doctor: can this machine snapshot and restore processes?")
    findings = diagnose()
    print(format_findings(findings))
    if snapshots_work(findings) or not install_criu:
        return 0 if snapshots_work(findings) else 1

    blocker = _install_blocker()
    if blocker:
        print(f"\nNot installing criu: {blocker}")
        return 1
    print("\nInstalling a private criu, because no working criu was found.")
    try:
        install_private_criu(default_prefix())
    except ProvisionError as exc:
        print(format_findings([Finding("install", FAIL, str(exc))]))
        return 1
    print("\nChecking again.")
    findings = diagnose()
    print(format_findings(findings))
    return 0 if snapshots_work(findings) else 1


def _install_blocker() -> str:
    """Return why installing the private criu would not help, or ''."""
    if os.environ.get(locate.CRIU_ENV):
        return f"{locate.CRIU_ENV} is set, so thaw would not use the private criu."
    return privilege_problem() or ""


def format_findings(findings: list[Finding]) -> str:
    """Return one aligned line per check, with multi-line details and fixes indented below."""
    lines = []
    indent = " " * (2 + 6 + CHECK_COLUMN_WIDTH)
    for finding in findings:
        first, *rest = finding.detail.splitlines() or [""]
        lines.append(f"  {finding.status:<6}{finding.check:<{CHECK_COLUMN_WIDTH}}{first}")
        lines += [indent + line for line in rest]
        if finding.fix:
            lines.append(f"{indent}fix: {finding.fix}")
    return "\n".join(lines)


def _candidates(findings: list[Finding]) -> Iterator[tuple[Criu, Path | None]]:
    """Yield each criu in the order Criu.find() tries them, with the binary when it is on PATH.

    A set $THAW_CRIU is the only candidate, as it is for Criu.find().
    """
    configured = os.environ.get(locate.CRIU_ENV)
    if configured:
        try:
            yield locate.criu_from_env(configured), None
        except CriuNotFound as exc:
            findings.append(Finding("criu", FAIL, str(exc)))
        return

    on_path = shutil.which("criu")
    if on_path:
        yield Criu([on_path], origin=f"{on_path} from PATH"), Path(on_path)
    private = locate.private_criu()
    if private is not None:
        yield private, None


def _criu_works(criu: Criu, path_binary: Path | None, findings: list[Finding]) -> bool:
    """Append the findings on one criu: its version, 'criu check' and the self-test."""
    try:
        findings.append(Finding("criu", OK, criu.describe()))
    except CriuNotFound as exc:
        findings.append(Finding("criu", FAIL, f"{criu.origin}: {exc}"))
        return False

    try:
        findings.append(Finding("criu check", OK, criu.check()))
    except CriuFailed as exc:
        findings.append(Finding("criu check", FAIL, str(exc)))

    selftest = _selftest_finding(criu, path_binary)
    findings.append(selftest)
    return selftest.status == OK


def _selftest_finding(criu: Criu, path_binary: Path | None) -> Finding:
    """Dump and restore a tiny process; for criu on PATH, also store the verdict for Criu.find()."""
    if path_binary is not None:
        verdict = locate.selftest_verdict(path_binary, refresh=True)
        if not verdict.ok:
            return Finding("self-test", FAIL, verdict.reason)
        return _selftest_passed(verdict.dump_ms, verdict.restore_ms)
    try:
        result = run_selftest(criu)
    except CriuError as exc:
        return Finding("self-test", FAIL, str(exc))
    return _selftest_passed(result.dump_ms, result.restore_ms)


def _selftest_passed(dump_ms: float, restore_ms: float) -> Finding:
    return Finding(
        "self-test",
        OK,
        "dumped a process that is PID 1 of its own PID namespace and restored it with new "
        f"pipes: dump {dump_ms:.0f} ms, restore {restore_ms:.0f} ms",
    )
