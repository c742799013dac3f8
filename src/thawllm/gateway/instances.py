"""One instance behind the gateway, as the pool tracks it."""

from __future__ import annotations

import asyncio
import enum
import signal
import time
from dataclasses import dataclass, field

from thawllm.supervisor.handle import InstanceHandle


class InstanceState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(eq=False)
class Instance:
    """A started or starting instance and the requests in flight on it."""

    number: int
    state: InstanceState = InstanceState.STARTING
    handle: InstanceHandle | None = None
    in_flight: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    # Set when the process exits without a stop request, so that requests in flight on it end at once.
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def label(self) -> str:
        return f"instance {self.number}"

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle else None

    @property
    def port(self) -> int | None:
        return self.handle.port if self.handle else None

    def status(self) -> dict:
        return {"number": self.number, "state": self.state.value, "pid": self.pid,
                "port": self.port, "in_flight": self.in_flight}


def describe_exit(returncode: int | None) -> str:
    """Describe an exit status as Popen reports it: negative for a signal."""
    if returncode is None:
        return "an unknown status"
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (perhaps out of memory?)" if returncode == -signal.SIGKILL else ""
    return f"{name}{hint}"
