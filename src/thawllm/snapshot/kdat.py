"""Give criu restores a kernel-feature cache where /run is not a tmpfs.

criu probes the kernel's features at every start and caches the result in
/run/criu.kdat, but only when /run is a tmpfs. On machines without one
(seen here: a VM without systemd, kernel 6.18, criu 4.1.1), every restore
spends about 30 ms on that probe. There, criu runs in a private mount
namespace whose /run is a directory on the /dev/shm tmpfs, so the cache
persists, and the restored process joins the caller's mount namespace with
--join-ns, so it has the same view of the filesystem as its caller.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

CACHE_DIR = Path("/dev/shm/thaw-criu-run")
RUN_DIR = "/run"
SHM_DIR = "/dev/shm"


def filesystem_type(path: str) -> str | None:
    """Return the type of the filesystem mounted at or above PATH, from /proc/self/mountinfo."""
    best, best_type = "", None
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            mount_point = fields[4]
            fs_type = fields[fields.index("-") + 1]
            covers = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if covers and len(mount_point) >= len(best):
                best, best_type = mount_point, fs_type
    return best_type


def _private_cache_dir() -> Path | None:
    """Return CACHE_DIR, created if needed, unless someone else could write to it."""
    try:
        CACHE_DIR.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(CACHE_DIR)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        return None
    return CACHE_DIR


def restore_wrapper() -> tuple[list[str], list[str]]:
    """Return the command prefix and extra criu arguments that give a restore a kdat cache.

    Both are empty where /run is already a tmpfs, or where the private mount
    namespace cannot be made (not root, no unshare, or no tmpfs at /dev/shm).
    """
    if os.geteuid() != 0 or filesystem_type(RUN_DIR) == "tmpfs":
        return [], []
    if filesystem_type(SHM_DIR) != "tmpfs" or not shutil.which("unshare") or not shutil.which("mount"):
        return [], []
    cache_dir = _private_cache_dir()
    if cache_dir is None:
        return [], []
    prefix = ["unshare", "--mount", "--propagation", "private",
              "sh", "-c", 'mount --bind "$0" /run && exec "$@"', str(cache_dir)]
    return prefix, ["--join-ns", f"mnt:/proc/{os.getpid()}/ns/mnt"]
