"""Entry point of a supervised service process: python -m thawllm.instance MODEL [options]."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from thawllm.logs import configure_logging, pid_note

logger = logging.getLogger("thaw.instance")

# Exit status of an instance that cannot boot, so that supervisors do not retry it.
BOOT_FAILED = 3


def report_boot_failure(message: str) -> None:
    """Send the supervisor a FAILED event, so that its error names the cause."""
    from thawllm.instance import control
    from thawllm.instance.managed import EVENTS_FD

    try:
        os.write(EVENTS_FD, control.encode(control.FAILED, pid=os.getpid(), message=message))
    except OSError:
        # The supervisor is gone; the log line above is all there is.
        pass


def main(argv: list[str] | None = None) -> int:
    from thawllm.instance.options import add_engine_options, engine_settings_from, import_modules

    parser = argparse.ArgumentParser(prog="python -m thawllm.instance")
    parser.add_argument("model", type=Path)
    parser.add_argument("--new-session", action="store_true",
                        help="become a session leader, as a snapshot template must be")
    add_engine_options(parser)
    args = parser.parse_args(argv)

    configure_logging()
    if args.new_session and os.getsid(0) != os.getpid():
        os.setsid()

    from thawllm.engine import EngineError
    from thawllm.instance.boot import boot_service

    try:
        app, config = boot_service(engine_settings_from(args, args.model), warm_up=True)
        import_modules(args.imports)
    except EngineError as exc:
        # An expected failure, such as a damaged model file, needs no traceback.
        logger.error("Service process failed to start%s: %s", pid_note(), exc)
        report_boot_failure(str(exc))
        return BOOT_FAILED
    except Exception as exc:
        logger.exception("Service process failed to start%s.", pid_note())
        report_boot_failure(f"{type(exc).__name__}: {exc}")
        return BOOT_FAILED

    from thawllm.instance.managed import run_managed

    return run_managed(app, config)


if __name__ == "__main__":
    sys.exit(main())
