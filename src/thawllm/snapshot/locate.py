"""Find a usable criu: $THAW_CRIU, then a self-tested criu on PATH, then the private prefix.

`thaw restore` looks criu up every time, so a self-test verdict on the criu
on PATH is cached per binary and kernel release, and the self-test only runs
when the binary or the kernel changed since the last verdict.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from thawllm.snapshot.criu import INSTALL_HINT, Criu, CriuError, CriuNotFound, privilege_problem
from thawllm.snapshot.provision import PrivateCriu, default_prefix
from thawllm.snapshot.selftest import run_selftest

log = logging.getLogger("thaw.snapshot")

CRIU_ENV = "THAW_CRIU"
ROOT_VERDICT_CACHE = Path("/var/lib/thaw/criu-selftest.json")
VERDICT_CACHE_NAME = "criu-selftest.json"


@dataclass(frozen=True)
class Verdict:
    """The outcome of a self-test of one criu binary on one kernel."""

    ok: bool
    version: str
    reason: str = ""
    dump_ms: float = 0.0
    restore_ms: float = 0.0


def find_criu() -> Criu:
    """Return the first usable criu; raise CriuNotFound naming what was tried."""
    problem = privilege_problem()
    if problem:
        raise CriuNotFound(problem)

    configured = os.environ.get(CRIU_ENV)
    if configured:
        return criu_from_env(configured)
    tried = [f"{CRIU_ENV} is not set"]

    on_path = shutil.which("criu")
    if on_path is None:
        tried.append("no criu on PATH")
    else:
        verdict = selftest_verdict(Path(on_path))
        if verdict.ok:
            return Criu([on_path], origin=f"{on_path} from PATH", version=verdict.version)
        tried.append(f"{on_path} (criu {verdict.version}) failed the self-test: {verdict.reason}")

    private = private_criu()
    if private is not None:
        return private
    tried.append(f"no private criu in {default_prefix()}")
    raise CriuNotFound(f"No usable criu: {'; '.join(tried)}. {INSTALL_HINT}")


def criu_from_env(configured: str) -> Criu:
    """Return the criu that $THAW_CRIU names, as a path or a command on PATH, untested."""
    path = configured if "/" in configured else shutil.which(configured)
    if path is None or not os.path.isfile(path):
        raise CriuNotFound(
            f"{CRIU_ENV}={configured} does not name an existing file. Point {CRIU_ENV} at a "
            f"criu binary, or unset it to use criu from PATH or the private prefix."
        )
    if not os.access(path, os.X_OK):
        raise CriuNotFound(f"{CRIU_ENV}={configured} is not executable. Run 'chmod +x {path}'.")
    return Criu([path], origin=f"{CRIU_ENV}={path}")


def private_criu() -> Criu | None:
    """Return the criu installed by 'thaw doctor --install-criu', or None."""
    prefix = default_prefix()
    installed = PrivateCriu.load(prefix)
    if installed is None:
        return None
    return Criu(installed.command(), origin=f"private prefix {prefix}", version=installed.version)


def selftest_verdict(binary: Path, *, refresh: bool = False) -> Verdict:
    """Return the cached self-test verdict on `binary`, running the self-test when needed.

    Failures are cached too, so that a broken criu on PATH costs one
    self-test per binary and kernel rather than one per restore. `refresh`
    runs the self-test even when a verdict is cached.
    NOTE: a failure of the self-test's own setup, such as a missing unshare,
    is cached against criu as well, until `thaw doctor` runs it again.
    """
    cache = VerdictCache(verdict_cache_path())
    if not refresh:
        cached = cache.lookup(binary)
        if cached is not None:
            return cached
    with cache.locked():
        # Another process may have finished the same self-test while we waited.
        cached = None if refresh else cache.lookup(binary)
        if cached is not None:
            return cached
        verdict = _run_verdict(binary)
        cache.record(binary, verdict)
    return verdict


def _run_verdict(binary: Path) -> Verdict:
    log.info("Running the criu self-test on %s.", binary)
    criu = Criu([str(binary)], origin=f"{binary} from PATH")
    try:
        version = criu.version
    except CriuNotFound as exc:
        return Verdict(ok=False, version="unknown", reason=str(exc))
    try:
        result = run_selftest(criu)
    except CriuError as exc:
        log.warning("criu %s at %s failed the self-test: %s", version, binary, exc)
        return Verdict(ok=False, version=version, reason=str(exc))
    return Verdict(ok=True, version=version, dump_ms=result.dump_ms, restore_ms=result.restore_ms)


def verdict_cache_path() -> Path:
    """Return /var/lib/thaw/criu-selftest.json for root, else a file under ~/.cache/thaw."""
    if os.geteuid() == 0:
        return ROOT_VERDICT_CACHE
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache_home).expanduser() / "thaw" / VERDICT_CACHE_NAME


class VerdictCache:
    """Self-test verdicts in a JSON file, keyed by binary and checked against its identity.

    An entry is valid while the binary's device, inode, size and modification
    time and the kernel release are those recorded with it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def lookup(self, binary: Path) -> Verdict | None:
        entry = self._entries().get(str(binary.resolve()))
        if not isinstance(entry, dict) or entry.get("identity") != _identity(binary):
            return None
        try:
            return Verdict(**entry["verdict"])
        except (KeyError, TypeError):
            return None

    def record(self, binary: Path, verdict: Verdict) -> None:
        """Store `verdict`, replacing the file atomically so readers never see half of it."""
        entries = self._entries()
        entries[str(binary.resolve())] = {
            "identity": _identity(binary),
            "verdict": asdict(verdict),
            "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False, suffix=".tmp") as new:
            json.dump(entries, new, indent=2)
        os.replace(new.name, self.path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock, so that concurrent callers run one self-test."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield

    def _entries(self) -> dict:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}


def _identity(binary: Path) -> list:
    """Return what identifies this build of `binary` on this kernel."""
    stat = binary.resolve().stat()
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, os.uname().release]
