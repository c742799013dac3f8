"""The interface that every way of starting an instance implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from thawllm.gateway.source import Source
from thawllm.supervisor.handle import InstanceHandle


class StartError(Exception):
    """One instance failed to start; the message gives the reason."""


class StarterUnavailable(Exception):
    """A starter cannot work on this machine or with this source; the message gives the reason."""


@dataclass(frozen=True)
class StarterOptions:
    """Settings that every starter may need besides the source."""

    start_timeout_s: float
    snapshot_cache: Path


class Starter(abc.ABC):
    """Makes serving instances. Its methods block, so the gateway calls them from threads."""

    name: str

    @classmethod
    @abc.abstractmethod
    def create(cls, source: Source, options: StarterOptions) -> "Starter":
        """Prepare to start instances of SOURCE; raise StarterUnavailable when this starter cannot."""

    @abc.abstractmethod
    def start(self, label: str, server_settings: dict) -> InstanceHandle:
        """Start one instance serving with SERVER_SETTINGS; raise StartError on failure.

        The instance listens on the port in server_settings (0 for any free
        port), and the returned handle stores the port it bound.
        """

    def abort(self) -> None:
        """End the starts in progress, so that start() raises soon; callable from any thread."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Say what this starter starts instances from, for the log."""
