"""The `thaw` command: parses arguments and calls into the packages.

Each subcommand imports its implementation lazily, because import time is
part of every cold start.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from thawllm import __version__


class CommandError(Exception):
    """A command failed in a way that a one-line message explains."""


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="path of a GGUF model file (default: the bundled SmolLM2-135M-Instruct Q4_1)")


def _add_listen(parser: argparse.ArgumentParser, port_help: str = "TCP port (default 8080)") -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; pass 0.0.0.0 to accept remote clients)")
    parser.add_argument("--port", type=int, default=8080, help=port_help)
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on every endpoint but /health "
                        "(default: $THAW_API_KEY, or none)")
    parser.add_argument("--max-queue", type=int, default=16,
                        help="requests that may wait for the model; more get 503 (default 16)")
    parser.add_argument("--alias", default=None,
                        help="model id that /v1/models lists and requests may name (default: the GGUF file name)")


def _server_settings(args: argparse.Namespace):
    from thawllm.server.settings import ServerSettings, SettingsError

    try:
        return ServerSettings.from_env(host=args.host, port=args.port, api_key=args.api_key,
                                       max_queue=args.max_queue, model_alias=args.alias)
    except SettingsError as exc:
        raise CommandError(str(exc)) from exc


def _resolve_engine(args: argparse.Namespace):
    from thawllm.instance.options import engine_settings_from
    from thawllm.models.files import ModelFileError, resolve_model

    try:
        return engine_settings_from(args, resolve_model(args.model))
    except ModelFileError as exc:
        raise CommandError(str(exc)) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    engine_settings = _resolve_engine(args)
    settings = _server_settings(args)
    if args.control:
        from thawllm.snapshot.create import SnapshotError
        from thawllm.supervisor.live import serve_with_control

        try:
            return serve_with_control(engine_settings, settings, Path(args.control), args.imports)
        except SnapshotError as exc:
            raise CommandError(str(exc)) from exc
    from thawllm.instance.direct import serve_directly
    from thawllm.instance.options import import_modules
    from thawllm.server.runner import BindError

    import_modules(args.imports)
    try:
        return serve_directly(engine_settings, settings)
    except BindError as exc:
        raise CommandError(str(exc)) from exc


def _unwind_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does, so that a command stops the
    processes it started and deletes its partial files on the way out."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from thawllm.snapshot.command import snapshot_command

    _unwind_on_sigterm()
    engine_settings = None if args.control else _resolve_engine(args)
    return snapshot_command(args, engine_settings)


def cmd_restore(args: argparse.Namespace) -> int:
    from thawllm.snapshot.restore_command import restore_command

    return restore_command(args, _server_settings(args))


def cmd_doctor(args: argparse.Namespace) -> int:
    from thawllm.snapshot.doctor import main

    return main(install_criu=args.install_criu)


def cmd_demo(args: argparse.Namespace) -> int:
    from thawllm.demo import run_demo

    _unwind_on_sigterm()
    return run_demo(args)


def cmd_gateway(args: argparse.Namespace) -> int:
    from thawllm.gateway.command import gateway_command

    return gateway_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from thawllm.bench.command import bench_command

    return bench_command(args)


def cmd_models(args: argparse.Namespace) -> int:
    from thawllm.models.command import models_command

    return models_command(args)


def build_parser() -> argparse.ArgumentParser:
    from thawllm.instance.options import add_engine_options

    parser = argparse.ArgumentParser(prog="thaw", description="GGUF inference services that start from a snapshot.")
    parser.add_argument("--version", action="version", version=f"thaw {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve a GGUF model over HTTP")
    _add_model(serve)
    _add_listen(serve)
    add_engine_options(serve)
    serve.add_argument("--control", metavar="PATH", default=None,
                       help="run under a supervisor with a management socket at PATH, "
                       "so that 'thaw snapshot --control PATH' can snapshot it while it serves")
    serve.set_defaults(handler=cmd_serve)

    snapshot = commands.add_parser("snapshot", help="snapshot a warm service process")
    _add_model(snapshot)
    snapshot.add_argument("-o", "--output", required=True, type=Path, help="snapshot directory to create")
    snapshot.add_argument("--control", metavar="PATH", default=None,
                          help="snapshot the running 'thaw serve --control PATH' instead of a new template")
    snapshot.add_argument("--leave-running", action="store_true",
                          help="with --control: go on serving after the snapshot")
    snapshot.add_argument("--force", action="store_true", help="replace an existing snapshot directory")
    add_engine_options(snapshot)
    snapshot.set_defaults(handler=cmd_snapshot)

    restore = commands.add_parser("restore", help="start serving replicas restored from a snapshot")
    restore.add_argument("snapshot", type=Path, help="snapshot directory made by 'thaw snapshot'")
    _add_listen(restore, port_help="TCP port of the first replica; the others take the next ports (default 8080)")
    restore.add_argument("--ports", default=None,
                         help="comma-separated ports, one per replica (overrides --port)")
    restore.add_argument("--replicas", type=int, default=1, help="number of replicas (default 1)")
    restore.add_argument("--verify", action="store_true",
                         help="also check the model file's SHA-256 (reads the whole file)")
    restore.add_argument("--fallback", choices=["none", "cold"], default="none",
                         help="when the snapshot cannot be restored here, 'cold' starts fresh instances instead")
    restore.set_defaults(handler=cmd_restore)

    doctor = commands.add_parser("doctor", help="check whether snapshots can work on this machine")
    doctor.add_argument("--install-criu", action="store_true",
                        help="as root on Debian or Ubuntu, install a working criu into a private prefix")
    doctor.set_defaults(handler=cmd_doctor)

    demo = commands.add_parser("demo", help="fresh start versus snapshot restore, side by side")
    _add_model(demo)
    demo.add_argument("--port", type=int, default=None, help="TCP port to use (default: a free port)")
    demo.add_argument("--prompt", default="SpaceX", help="prompt answered by both instances")
    demo.set_defaults(handler=cmd_demo)

    from thawllm.gateway.options import add_gateway_options
    from thawllm.bench.options import add_bench_options
    from thawllm.models.options import add_models_options

    gateway = commands.add_parser("gateway", help="scale-from-zero gateway for a snapshot or a model")
    add_gateway_options(gateway)
    gateway.set_defaults(handler=cmd_gateway)

    bench = commands.add_parser("bench", help="measure cold starts side by side")
    add_bench_options(bench)
    bench.set_defaults(handler=cmd_bench)

    models = commands.add_parser("models", help="generate synthetic models")
    add_models_options(models)
    models.set_defaults(handler=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from thawllm.logs import configure_logging

    configure_logging(args.log_level)
    try:
        return args.handler(args) or 0
    except CommandError as exc:
        print(f"thaw {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
