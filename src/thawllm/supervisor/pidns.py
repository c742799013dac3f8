"""Run a command as PID 1 of a new PID namespace: python -m thawllm.supervisor.pidns CMD [ARG...].

This does what `unshare --pid --fork` does, with three differences. It sets
no parent-death signal, which would kill replicas restored from the child's
snapshot. It prints nothing on the child's stderr, a control pipe here. It
keeps no copy of the child's pipes open, so they close as soon as the child
exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWPID = 0x20000000
# Exit status when the namespace cannot be made, as a shell reports a command that failed to start.
LAUNCH_FAILED = 127


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWPID) != 0:
        errno = ctypes.get_errno()
        print(f"pidns: unshare(CLONE_NEWPID) failed: {os.strerror(errno)}; run as root.", file=sys.stderr)
        return LAUNCH_FAILED

    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"pidns: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(LAUNCH_FAILED)

    # The child gets the signals meant for it; this process only waits for it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    for fd in (0, 1, 2):
        os.close(fd)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
