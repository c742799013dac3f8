"""Run the criu command-line tool: dump a process tree to images and restore it."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from thawllm.snapshot import criu_images, kdat, procs

log = logging.getLogger("thaw.snapshot")

DUMP_TIMEOUT_S = 300.0
RESTORE_TIMEOUT_S = 30.0
CHECK_TIMEOUT_S = 30.0
VERSION_TIMEOUT_S = 10.0

DUMP_LOG_NAME = "dump.log"
DUMP_LOG_VERBOSITY = "-v4"
# Debug lines (-v4) are left out of restore logs: when a restore spins, as on
# a truncated pages image, criu writes debug lines at tens of MB/s until the
# timeout.
RESTORE_LOG_VERBOSITY = "-v3"
LOG_TAIL_LINES = 40
QUOTED_ERROR_LINES = 3

CAP_SYS_ADMIN = 21
CAP_CHECKPOINT_RESTORE = 40

INSTALL_HINT = "Run 'thaw doctor --install-criu' as root to install a working criu privately."

RETAKE_HINT = "Take the snapshot again."

# Text in criu's log or output, and what to do about it.
KNOWN_FAILURES = (
    (
        "Unexpected rt vDSO area bounds",
        "This criu is too old for the running kernel: criu 3.17 fails this way on "
        "Linux 6.13 and later. " + INSTALL_HINT,
    ),
    ("bytes while", "An image file is shorter than its records say: it is truncated. " + RETAKE_HINT),
)

# Error lines that criu 4.1.1 logs in every dump and restore when it lacks
# CAP_SYS_RESOURCE, even when the run succeeds, because only criu's attempt to
# raise its own open-file limit failed.
HARMLESS_ERRORS = ("Can't setup RLIMIT_NOFILE for self",)

_VERSION_PATTERN = re.compile(r"^Version:\s*(\S+)", re.MULTILINE)
_ERROR_PATTERN = re.compile(r"\bError\b")


class CriuError(Exception):
    """Base class of the criu wrapper's errors."""


class CriuNotFound(CriuError):
    """No usable criu could be reached: missing, unable to run, or no privileges."""


class CriuFailed(CriuError):
    """criu ran and failed: carries the action, the exit code and the log tail."""

    def __init__(
        self,
        action: str,
        returncode: int | None,
        *,
        log_path: Path | None = None,
        log_lines: Sequence[str] = (),
        reason: str = "",
        hint: str = "",
    ) -> None:
        self.action = action
        self.returncode = returncode
        self.log_path = log_path
        self.log_tail = list(log_lines[-LOG_TAIL_LINES:])
        self.error_lines = _by_relevance([line for line in log_lines if _is_error(line)])
        self.hint = hint or failure_hint(log_lines)
        super().__init__(self._compose_message(reason))

    def _compose_message(self, reason: str) -> str:
        if reason:
            headline = f"criu {self.action} {reason.rstrip('.')}."
        else:
            headline = f"criu {self.action} failed with exit code {self.returncode}."
        quoted = self.error_lines[:QUOTED_ERROR_LINES] or self.log_tail[-QUOTED_ERROR_LINES:]
        lines = [headline, *(f"  {line}" for line in quoted)]
        if self.log_path is not None:
            lines.append(f"Full log: {self.log_path}")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


def _is_error(line: str) -> bool:
    if not _ERROR_PATTERN.search(line):
        return False
    return not any(harmless in line for harmless in HARMLESS_ERRORS)


def _by_relevance(error_lines: list[str]) -> list[str]:
    """Order error lines: known failures first, then others, then helper-program exits."""

    def rank(line: str) -> int:
        if any(needle in line for needle, _ in KNOWN_FAILURES):
            return 0
        return 2 if "exited, status=" in line else 1

    return sorted(error_lines, key=rank)


def failure_hint(log_lines: Sequence[str]) -> str:
    """Return what to do about a known criu failure in `log_lines`, or ''."""
    text = "\n".join(log_lines)
    for needle, hint in KNOWN_FAILURES:
        if needle in text:
            return hint
    return ""


def effective_capabilities() -> int:
    """Return this process's effective capability set as a bit mask."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def privilege_problem() -> str | None:
    """Return why this process cannot run criu's dump and restore, or None if it can.

    Restoring a template recreates its PID namespace, which needs
    CAP_SYS_ADMIN; the kernel also accepts CAP_SYS_ADMIN in place of
    CAP_CHECKPOINT_RESTORE for the checkpoint operations.
    """
    capabilities = effective_capabilities()
    if capabilities & (1 << CAP_SYS_ADMIN):
        return None
    if os.geteuid() == 0:
        return (
            "This process runs as root but without CAP_SYS_ADMIN, which criu needs to dump "
            "and restore processes; a container runtime or service manager dropped it. "
            "Grant CAP_SYS_ADMIN, for example by starting the container with --privileged."
        )
    if capabilities & (1 << CAP_CHECKPOINT_RESTORE):
        return (
            f"This process (uid {os.geteuid()}) has CAP_CHECKPOINT_RESTORE but not "
            "CAP_SYS_ADMIN, which criu needs to restore a template into a new PID "
            "namespace. Run thaw as root."
        )
    return (
        f"This process (uid {os.geteuid()}) lacks root's CAP_SYS_ADMIN, which criu needs "
        "to dump and restore processes. Run thaw as root, for example with sudo."
    )


def read_version(
    argv: Sequence[str], timeout_s: float = VERSION_TIMEOUT_S, hint: str = INSTALL_HINT
) -> str:
    """Run `criu --version` through `argv` and return the version, such as '4.1.1'.

    Raises CriuNotFound, ending with `hint`, when criu cannot run.
    """
    try:
        result = subprocess.run(
            [*argv, "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CriuNotFound(f"Could not run {argv[-1]}: {exc}. {hint}".rstrip()) from exc

    match = _VERSION_PATTERN.search(result.stdout)
    if result.returncode != 0 or match is None:
        output = (result.stdout + result.stderr).strip() or "no output"
        raise CriuNotFound(
            f"{argv[-1]} --version failed with exit code {result.returncode}: {output}. {hint}".rstrip()
        )
    return match.group(1)


@dataclass(frozen=True)
class CriuRun:
    """The outcome of one criu process: exit code (None after a timeout) and output."""

    returncode: int | None
    output: str
    elapsed_s: float


class Criu:
    """A criu that can run here, found by `Criu.find()`."""

    def __init__(self, argv: Sequence[str], *, origin: str, version: str | None = None) -> None:
        self._argv = tuple(argv)
        self.origin = origin
        self._version = version

    @classmethod
    def find(cls) -> Criu:
        """Return the first usable criu: $THAW_CRIU, a self-tested criu on PATH, the private prefix.

        Raises CriuNotFound naming what was tried and what to do.
        """
        # Imported here because locate builds Criu objects from this module.
        from thawllm.snapshot.locate import find_criu

        return find_criu()

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = read_version(self._argv)
        return self._version

    def command(self, *args: str) -> list[str]:
        """Return the full argv that runs criu with `args`."""
        return [*self._argv, *args]

    def describe(self) -> str:
        return f"criu {self.version} ({self.origin})"

    def check(self, timeout_s: float = CHECK_TIMEOUT_S) -> str:
        """Run `criu check` and return its output; raise CriuFailed when it fails."""
        run = run_criu(self.command("check"), timeout_s=timeout_s)
        lines = run.output.splitlines()
        if run.returncode is None:
            raise CriuFailed("check", None, log_lines=lines, reason=f"timed out after {timeout_s:g} s")
        if run.returncode != 0:
            raise CriuFailed("check", run.returncode, log_lines=lines)
        return run.output.strip()

    def dump(
        self,
        pid: int,
        images_dir: Path,
        *,
        leave_running: bool = False,
        extra_args: Sequence[str] = (),
        timeout_s: float = DUMP_TIMEOUT_S,
    ) -> float:
        """Dump the process tree rooted at `pid` into `images_dir`; return the seconds taken.

        The log goes to images_dir/dump.log. Without `leave_running` criu
        kills the tree after a successful dump.
        """
        if not procs.is_running(pid):
            raise ProcessLookupError(f"Cannot dump process {pid}: no such running process.")
        images_dir = Path(images_dir).absolute()
        images_dir.mkdir(parents=True, exist_ok=True)
        log_path = images_dir / DUMP_LOG_NAME

        args = ["dump", "-t", str(pid), "-D", str(images_dir), "-o", str(log_path)]
        args.append(DUMP_LOG_VERBOSITY)
        if leave_running:
            args.append("--leave-running")
        run = run_criu(self.command(*args, *extra_args), timeout_s=timeout_s)

        _raise_on_failure("dump", run, log_path, timeout_s)
        log.info("Dumped process %d to %s in %.0f ms.", pid, images_dir, run.elapsed_s * 1000)
        return run.elapsed_s

    def restore(
        self,
        images_dir: Path,
        *,
        pidfile: Path,
        inherit_fds: Mapping[int, str],
        extra_args: Sequence[str] = (),
        timeout_s: float = RESTORE_TIMEOUT_S,
    ) -> int:
        """Restore the tree dumped in `images_dir` detached, and return its root's pid.

        Each key of `inherit_fds` is a descriptor open in this process that
        replaces the dumped file named by its value, such as 'pipe:[12345]'.
        The pid is the root's pid in this process's PID namespace. criu
        exits after the restore, so the root is reparented: to this process
        only if it is a child subreaper (PR_SET_CHILD_SUBREAPER), else to
        init. Watch it with os.pidfd_open where waitpid cannot reach it.
        The log goes to a fresh directory, so replicas restored from one
        image at once do not collide. A success deletes it, and a failure
        keeps it and names it in the error.
        A pages file shorter than its pagemap raises CriuFailed before criu
        starts, because criu 4.1.1 would spin on it until the timeout.
        """
        images_dir = Path(images_dir).absolute()
        pidfile = Path(pidfile).absolute()
        _check_restore_inputs(images_dir, pidfile, inherit_fds)
        try:
            criu_images.check_pages(images_dir)
        except criu_images.DamagedImage as exc:
            raise CriuFailed(
                "restore", None, reason=f"was not started: {exc}", hint=RETAKE_HINT
            ) from exc
        work_dir = Path(tempfile.mkdtemp(prefix="thaw-criu-restore-"))
        log_path = work_dir / "restore.log"

        args = ["restore", "-D", str(images_dir), "-W", str(work_dir), "-d"]
        args += ["--pidfile", str(pidfile), "-o", str(log_path), RESTORE_LOG_VERBOSITY]
        for fd, key in inherit_fds.items():
            args += ["--inherit-fd", f"fd[{fd}]:{key}"]
        prefix, kdat_args = kdat.restore_wrapper()
        argv = [*prefix, *self.command(*args, *kdat_args, *extra_args)]
        try:
            run = run_criu(argv, timeout_s=timeout_s, pass_fds=inherit_fds)
        except BaseException:
            # Interrupted: no error message names the log, so it goes too.
            shutil.rmtree(work_dir, ignore_errors=True)
            raise

        _raise_on_failure("restore", run, log_path, timeout_s)
        pid = _read_pidfile(pidfile, log_path)
        shutil.rmtree(work_dir, ignore_errors=True)
        log.info("Restored process %d from %s in %.0f ms.", pid, images_dir, run.elapsed_s * 1000)
        return pid


def run_criu(
    argv: Sequence[str], *, timeout_s: float, pass_fds: Sequence[int] = ()
) -> CriuRun:
    """Run criu to completion; after `timeout_s`, kill it and every process it started.

    The output goes to an unnamed file rather than a pipe, because a process
    restored by criu could keep a pipe open and block the read.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as output:
        try:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                pass_fds=tuple(pass_fds),
            )
        except OSError as exc:
            raise CriuNotFound(f"Could not start {argv[0]}: {exc}. {INSTALL_HINT}") from exc
        try:
            returncode: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_criu_tree(process)
            returncode = None
        except BaseException:
            # Interrupted by Ctrl-C or SIGTERM: criu and what it was restoring must not outlive us.
            _kill_criu_tree(process)
            raise
        output.seek(0)
        return CriuRun(returncode, output.read(), time.monotonic() - started)


def _kill_criu_tree(process: subprocess.Popen) -> None:
    """Kill a criu that timed out, and the processes it was restoring, by pid."""
    # Restored processes come first, because once criu dies they are
    # reparented and can no longer be found as its descendants.
    for pid in procs.descendant_pids(process.pid):
        procs.kill_and_wait(pid)
    process.kill()
    process.wait()


def _raise_on_failure(action: str, run: CriuRun, log_path: Path, timeout_s: float) -> None:
    if run.returncode == 0:
        return
    lines = _read_lines(log_path) + run.output.splitlines()
    reason = f"timed out after {timeout_s:g} s and was killed" if run.returncode is None else ""
    kept_log = log_path if log_path.exists() else None
    raise CriuFailed(action, run.returncode, log_path=kept_log, log_lines=lines, reason=reason)


def _read_pidfile(pidfile: Path, log_path: Path) -> int:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        raise CriuFailed(
            "restore", 0, log_path=log_path, log_lines=_read_lines(log_path),
            reason=f"succeeded but left no pid in {pidfile} ({exc})",
        ) from exc


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _check_restore_inputs(images_dir: Path, pidfile: Path, inherit_fds: Mapping[int, str]) -> None:
    if not (images_dir / "inventory.img").is_file():
        raise FileNotFoundError(
            f"{images_dir} contains no criu images (inventory.img is missing). "
            "Pass the directory that 'criu dump' wrote."
        )
    if pidfile.exists():
        raise FileExistsError(f"Pidfile {pidfile} already exists; criu needs a new path.")
    for fd in inherit_fds:
        try:
            os.fstat(fd)
        except OSError as exc:
            raise ValueError(
                f"inherit_fds names fd {fd} for {inherit_fds[fd]!r}, but fd {fd} is not open "
                "in this process."
            ) from exc
