"""`thaw gateway`: check the options, pick a starter, then serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

from thawllm.gateway.capacity import available_cores, default_capacity
from thawllm.gateway.settings import GatewaySettings, GatewaySettingsError, ScalingSettings, scaling_from
from thawllm.gateway.source import Source, SourceError, resolve_source
from thawllm.server.runner import bind_socket

logger = logging.getLogger("thaw.gateway")

# Instances listen on loopback only; the gateway is their one way in.
INSTANCE_HOST = "127.0.0.1"


class ShutdownSignals:
    """SIGTERM and SIGINT handling in two phases.

    While the gateway prepares (it may be taking a snapshot), a signal raises
    KeyboardInterrupt, so that cleanup code runs and the command exits. Once
    the event loop runs, a signal only sets the server's should_exit. uvicorn
    installs its own handlers while it serves and passes the signals on to
    these when it returns, which then only record them.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.serving = False
        self.server = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def attach(self, server) -> None:
        """Route later signals to SERVER, and stop it at once if one came already."""
        self.server = server
        if self.received:
            server.should_exit = True

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)
        if not self.serving:
            raise KeyboardInterrupt
        if self.server is not None:
            self.server.should_exit = True


def gateway_command(args: argparse.Namespace) -> int:
    from thawllm.cli import CommandError
    from thawllm.gateway.server import run_gateway
    from thawllm.gateway.starters import StarterUnavailable
    from thawllm.server.runner import BindError
    from thawllm.server.settings import SettingsError

    signals = ShutdownSignals()
    try:
        plan = _plan(args)
        # Bound before the starter is ready, so that a busy port fails before a long snapshot.
        sock = _bind_public(plan.settings)
    except (GatewaySettingsError, SettingsError, SourceError, BindError) as exc:
        raise CommandError(str(exc)) from exc

    with sock:
        try:
            starter = _create_starter(args, plan)
        except StarterUnavailable as exc:
            raise CommandError(str(exc)) from exc
        signals.serving = True
        asyncio.run(run_gateway(sock, plan, starter, _instance_settings(plan), signals))
    if signals.received:
        logger.info("Gateway stopped after %s [pid %d].", signal.Signals(signals.received[0]).name, os.getpid())
    return 0


def _bind_public(settings: GatewaySettings) -> socket.socket:
    sock = bind_socket(settings.host, settings.port)
    # asyncio turns Nagle's algorithm off only on sockets whose proto is IPPROTO_TCP, and
    # bind_socket makes its socket with proto 0. Linux copies the option to accepted
    # connections. Without it, a response sent in two writes (headers, then body) waits
    # for the client's delayed ACK, which is 40 ms on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass(frozen=True)
class Plan:
    """The checked settings of one gateway run."""

    settings: GatewaySettings
    scaling: ScalingSettings
    source: Source


def _plan(args: argparse.Namespace) -> Plan:
    from thawllm.server.settings import ServerSettings

    api_key = ServerSettings.from_env(api_key=args.api_key).api_key
    settings = GatewaySettings(host=args.host, port=args.port, starter=args.starter,
                               drain_timeout_s=args.drain_timeout, api_key=api_key)
    source = resolve_source(args)
    logger.info("Source: %s.", source.describe())
    scaling = scaling_from(args, _max_instances(args, source))
    _warn_oversubscription(source, scaling.max_instances)
    return Plan(settings, scaling, source)


def _warn_oversubscription(source: Source, max_instances: int) -> None:
    """Warn when busy instances would run more inference threads than there are cores."""
    cores = available_cores()
    threads = source.engine.threads or os.cpu_count()
    if max_instances > 1 and threads * max_instances > cores:
        logger.warning("Each instance runs %d inference threads, so %d busy instances would run %d threads "
                       "on %d cores and slow each other down. Pass --threads %d to share the cores.",
                       threads, max_instances, threads * max_instances, cores, max(1, cores // max_instances))


def _max_instances(args: argparse.Namespace, source: Source) -> int:
    if args.max_instances is not None:
        return args.max_instances
    capacity = default_capacity(source.engine)
    logger.info("Default %s.", capacity.explanation)
    if capacity.max_instances < args.min_instances:
        logger.warning("Raising --max-instances to --min-instances %d, above the estimate.", args.min_instances)
        return args.min_instances
    return capacity.max_instances


def _create_starter(args: argparse.Namespace, plan: Plan):
    from thawllm.gateway.snapshot_cache import default_cache_root
    from thawllm.gateway.starters import StarterOptions, create_starter

    options = StarterOptions(start_timeout_s=plan.scaling.start_timeout_s,
                             snapshot_cache=args.snapshot_cache or default_cache_root())
    return create_starter(plan.settings.starter, plan.source, options)


def _instance_settings(plan: Plan) -> dict:
    from thawllm.server.settings import ServerSettings

    # An instance admits max_queue requests besides the one it runs, and the gateway
    # sends it at most target_concurrency at once. The one spare slot is for a request
    # that has ended at the gateway while the instance still cleans up after it.
    return ServerSettings(host=INSTANCE_HOST, port=0, api_key=plan.settings.api_key,
                          max_queue=plan.scaling.target_concurrency).to_dict()
