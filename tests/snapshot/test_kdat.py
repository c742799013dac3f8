import os

from thawllm.snapshot import kdat


def test_filesystem_type_of_proc():
    assert kdat.filesystem_type("/proc/self") == "proc"


def test_wrapper_only_without_tmpfs_run():
    prefix, extra = kdat.restore_wrapper()
    if os.geteuid() != 0 or kdat.filesystem_type("/run") == "tmpfs":
        assert (prefix, extra) == ([], [])
    elif prefix:
        assert prefix[0] == "unshare"
        assert extra == ["--join-ns", f"mnt:/proc/{os.getpid()}/ns/mnt"]
