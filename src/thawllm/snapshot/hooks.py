"""Hooks that run in a service process around a snapshot.

Code running in the service (a module passed with --import) registers them,
in the spirit of AWS Lambda SnapStart's runtime hooks:

    from thawllm.snapshot.hooks import register_after_restore

    @register_after_restore
    def reconnect():
        ...

Before-snapshot hooks run right before the process parks to be dumped;
after-restore hooks run in each replica before it reports ready. A hook that
raises fails the snapshot, or the replica's start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("thaw.snapshot")

Hook = Callable[[], None]

_before_snapshot: list[Hook] = []
_after_restore: list[Hook] = []


def register_before_snapshot(hook: Hook) -> Hook:
    """Run HOOK in the service process before it is snapshotted."""
    _before_snapshot.append(hook)
    return hook


def register_after_restore(hook: Hook) -> Hook:
    """Run HOOK in each restored process before it reports ready."""
    _after_restore.append(hook)
    return hook


def run_before_snapshot() -> None:
    for hook in _before_snapshot:
        logger.debug("Running before-snapshot hook %s.", hook.__qualname__)
        hook()


def run_after_restore() -> None:
    for hook in _after_restore:
        logger.debug("Running after-restore hook %s.", hook.__qualname__)
        hook()
