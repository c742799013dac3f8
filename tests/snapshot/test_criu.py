"""The criu wrapper against the real criu: finding it, dump and restore, and damaged images."""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from thawllm.snapshot import locate, procs
from thawllm.snapshot.criu import (
    RESTORE_LOG_VERBOSITY,
    Criu,
    CriuFailed,
    CriuNotFound,
    run_criu,
)
from thawllm.snapshot.locate import Verdict, VerdictCache
from thawllm.snapshot.selftest import (
    ANSWER_TIMEOUT_S,
    ReplacementPipes,
    TinyTemplate,
    exchange_line,
    run_selftest,
)

TIMEOUT_TEST_RESTORE_S = 3.0
CONCURRENT_REPLICAS = 4


@pytest.fixture
def dumped(criu: Criu, tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """Images of a TinyTemplate in tmp_path/images, and the keys of its std pipes."""
    images_dir = tmp_path / "images"
    with TinyTemplate() as template:
        keys = template.pipe_keys()
        criu.dump(template.pid, images_dir)
        template.wait_for_launcher()
    return images_dir, keys


def write_criu_script(path: Path, criu: Criu) -> Path:
    """Write a shell script that runs `criu` with its arguments, like a criu on PATH."""
    command = " ".join(f"'{part}'" for part in criu.command())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def nspid(pid: int) -> list[int]:
    """Return the pid of `pid` in each PID namespace, outermost first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(value) for value in line.split()[1:]]
    return []


def test_find_returns_runnable_criu(criu):
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", criu.version)
    assert criu.version in criu.describe()
    assert criu.origin in criu.describe()
    assert criu.command("--version")[-1] == "--version"


def test_check_looks_good(criu):
    assert "Looks good" in criu.check()


def test_find_prefers_thaw_criu(criu, tmp_path, monkeypatch):
    script = write_criu_script(tmp_path / "my-criu", criu)
    monkeypatch.setenv("THAW_CRIU", str(script))

    found = Criu.find()

    assert found.origin == f"THAW_CRIU={script}"
    assert found.command("check")[0] == str(script)
    assert found.version == criu.version


def test_find_rejects_missing_thaw_criu(criu, tmp_path, monkeypatch):
    missing = tmp_path / "no-such-criu"
    monkeypatch.setenv("THAW_CRIU", str(missing))

    with pytest.raises(CriuNotFound) as caught:
        Criu.find()

    assert str(missing) in str(caught.value)
    assert "THAW_CRIU" in str(caught.value)


def test_find_caches_path_criu_verdict(criu, tmp_path, monkeypatch, private_tmp, process_watch):
    bin_dir = tmp_path / "bin"
    script = write_criu_script(bin_dir / "criu", criu)
    cache_path = tmp_path / "criu-selftest.json"
    monkeypatch.setattr(locate, "ROOT_VERDICT_CACHE", cache_path)
    monkeypatch.delenv("THAW_CRIU", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    first = Criu.find()
    assert first.origin == f"{script} from PATH"
    assert VerdictCache(cache_path).lookup(script).ok

    # Without unshare on PATH a self-test cannot run, so this find() can
    # only succeed through the cached verdict.
    monkeypatch.setenv("PATH", str(bin_dir))
    assert Criu.find().origin == f"{script} from PATH"

    # A changed binary invalidates the verdict; the new self-test fails.
    script.write_text(script.read_text() + "# changed\n")
    assert VerdictCache(cache_path).lookup(script) is None
    try:
        fallback = Criu.find()
    except CriuNotFound as exc:
        assert "failed the self-test" in str(exc)
    else:
        assert "from PATH" not in fallback.origin
    assert VerdictCache(cache_path).lookup(script).ok is False
    assert process_watch.leftovers() == {}


def test_verdict_cache_keys_on_binary_and_kernel(tmp_path):
    binary = tmp_path / "criu"
    binary.write_text("#!/bin/sh\n")
    cache = VerdictCache(tmp_path / "cache.json")
    cache.record(binary, Verdict(ok=True, version="4.1.1", dump_ms=1.0, restore_ms=2.0))

    assert cache.lookup(binary) == Verdict(ok=True, version="4.1.1", dump_ms=1.0, restore_ms=2.0)
    entry = next(iter(cache._entries().values()))
    assert os.uname().release in entry["identity"]

    binary.write_text("#!/bin/sh\n# rebuilt\n")
    assert cache.lookup(binary) is None


def test_selftest_round_trip(criu, private_tmp, process_watch):
    result = run_selftest(criu)

    assert result.dump_ms > 0
    assert result.restore_ms > 0
    assert process_watch.leftovers() == {}
    assert list(private_tmp.iterdir()) == []


def test_restore_reconnects_pipes_in_new_pid_namespace(criu, dumped, tmp_path, private_tmp, process_watch):
    images_dir, keys = dumped
    pidfile = tmp_path / "restored.pid"

    with ReplacementPipes() as pipes:
        pid = criu.restore(images_dir, pidfile=pidfile, inherit_fds=pipes.inherit_fds(keys))
        try:
            pipes.close_child_ends()
            answer = exchange_line(pipes.stdin_write, pipes.stdout_read, b"hello\n", ANSWER_TIMEOUT_S)
            namespaces = nspid(pid)
            stdin_target = os.readlink(f"/proc/{pid}/fd/0")
            our_stdin_pipe = f"pipe:[{os.fstat(pipes.stdin_write).st_ino}]"
        finally:
            procs.kill_and_wait(pid)

    assert answer == b"hello\n"
    assert int(pidfile.read_text()) == pid
    assert namespaces == [pid, 1]
    assert stdin_target == our_stdin_pipe
    assert list(private_tmp.iterdir()) == [], "a successful restore keeps no log"
    assert process_watch.leftovers() == {}


def test_concurrent_restores_from_one_image(criu, dumped, tmp_path, private_tmp, process_watch):
    images_dir, keys = dumped

    def restore_and_echo(replica: int) -> bytes:
        with ReplacementPipes() as pipes:
            pid = criu.restore(
                images_dir, pidfile=tmp_path / f"replica-{replica}.pid", inherit_fds=pipes.inherit_fds(keys)
            )
            try:
                pipes.close_child_ends()
                line = f"replica {replica}\n".encode()
                return exchange_line(pipes.stdin_write, pipes.stdout_read, line, ANSWER_TIMEOUT_S)
            finally:
                procs.kill_and_wait(pid)

    with ThreadPoolExecutor(max_workers=CONCURRENT_REPLICAS) as pool:
        answers = list(pool.map(restore_and_echo, range(CONCURRENT_REPLICAS)))

    assert answers == [f"replica {replica}\n".encode() for replica in range(CONCURRENT_REPLICAS)]
    assert list(private_tmp.iterdir()) == []
    assert process_watch.leftovers() == {}


def test_restore_truncated_pages_fails_before_criu(criu, dumped, tmp_path, private_tmp, process_watch):
    images_dir, keys = dumped
    pages = images_dir / "pages-1.img"
    os.truncate(pages, pages.stat().st_size // 2)

    with ReplacementPipes() as pipes, pytest.raises(CriuFailed) as caught:
        criu.restore(images_dir, pidfile=tmp_path / "pid", inherit_fds=pipes.inherit_fds(keys))

    message = str(caught.value)
    assert "pages-1.img" in message
    assert "truncated" in message
    assert "Take the snapshot again" in message
    assert caught.value.action == "restore"
    assert process_watch.leftovers() == {}
    assert list(private_tmp.iterdir()) == []


def test_restore_truncated_core_reports_criu_errors(criu, dumped, tmp_path, private_tmp, process_watch):
    images_dir, keys = dumped
    core = images_dir / "core-1.img"
    os.truncate(core, core.stat().st_size // 2)

    with ReplacementPipes() as pipes, pytest.raises(CriuFailed) as caught:
        criu.restore(images_dir, pidfile=tmp_path / "pid", inherit_fds=pipes.inherit_fds(keys))

    failure = caught.value
    assert failure.returncode == 1
    assert "core-1.img" in str(failure)
    assert "RLIMIT_NOFILE" not in str(failure), "harmless errors are not quoted"
    assert failure.log_path is not None and failure.log_path.is_file()
    assert str(failure.log_path) in str(failure)
    assert failure.log_path.parent.parent == private_tmp
    assert failure.log_tail
    assert not (tmp_path / "pid").exists()
    assert process_watch.leftovers() == {}


def test_restore_timeout_kills_restored_tree(criu, dumped, tmp_path, process_watch):
    # criu 4.1.1 spins forever on a truncated pages file, which Criu.restore
    # refuses up front; running criu directly shows the timeout still ends it.
    images_dir, keys = dumped
    pages = images_dir / "pages-1.img"
    os.truncate(pages, pages.stat().st_size // 2)
    log_path = tmp_path / "restore.log"
    args = ["restore", "-D", str(images_dir), "-W", str(tmp_path), "-d", "-o", str(log_path)]

    with ReplacementPipes() as pipes:
        inherit = pipes.inherit_fds(keys)
        for fd, key in inherit.items():
            args += ["--inherit-fd", f"fd[{fd}]:{key}"]
        run = run_criu(
            criu.command(*args, RESTORE_LOG_VERBOSITY), timeout_s=TIMEOUT_TEST_RESTORE_S, pass_fds=inherit
        )

    assert run.returncode is None
    assert process_watch.leftovers() == {}


def test_restore_rejects_existing_pidfile(criu, dumped, tmp_path):
    images_dir, keys = dumped
    pidfile = tmp_path / "pid"
    pidfile.write_text("123\n")

    with ReplacementPipes() as pipes, pytest.raises(FileExistsError, match=str(pidfile)):
        criu.restore(images_dir, pidfile=pidfile, inherit_fds=pipes.inherit_fds(keys))


def test_restore_rejects_closed_inherit_fd(criu, dumped, tmp_path):
    images_dir, keys = dumped
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)

    with pytest.raises(ValueError, match=f"fd {read_fd}"):
        criu.restore(images_dir, pidfile=tmp_path / "pid", inherit_fds={read_fd: keys[0]})


def test_restore_rejects_directory_without_images(criu, tmp_path):
    with pytest.raises(FileNotFoundError, match="inventory.img"):
        criu.restore(tmp_path, pidfile=tmp_path / "pid", inherit_fds={})


def test_dump_of_missing_process_raises(criu, tmp_path):
    with TinyTemplate() as template:
        pid = template.pid
    with pytest.raises(ProcessLookupError, match=str(pid)):
        criu.dump(pid, tmp_path / "images")


def test_criu_failed_quotes_relevant_errors():
    log_lines = [
        "(00.01) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: "
        "Operation not permitted",
        "(00.02) Error (criu/util.c:642): exited, status=1",
        "(00.03) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds",
        "(00.04) Error (criu/cr-dump.c:2100): Dumping FAILED.",
    ]

    failure = CriuFailed("dump", 1, log_path=Path("/var/log/dump.log"), log_lines=log_lines)
    quoted = str(failure).splitlines()

    assert quoted[0] == "criu dump failed with exit code 1."
    assert "Unexpected rt vDSO area bounds" in quoted[1]
    assert "Dumping FAILED" in quoted[2]
    assert "exited, status=1" in quoted[3]
    assert not any("RLIMIT_NOFILE" in line for line in quoted)
    assert "too old" in failure.hint
    assert "thaw doctor --install-criu" in str(failure)
    assert "/var/log/dump.log" in str(failure)
