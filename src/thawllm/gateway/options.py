"""Command-line options of `thaw gateway`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_gateway_options(parser: argparse.ArgumentParser) -> None:
    from thawllm.instance.options import add_engine_options

    parser.add_argument("source", nargs="?", default=None,
                        help="snapshot directory, or a GGUF model to snapshot first (default: the bundled model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="public TCP port (default 8080)")
    parser.add_argument("--starter", choices=["auto", "criu", "cold"], default="auto",
                        help="how instances start: criu restore, cold start of the service process, "
                        "or auto (criu when snapshots work here, else cold) (default auto)")
    parser.add_argument("--target-concurrency", type=int, default=1,
                        help="in-flight requests per instance before scaling out (default 1)")
    parser.add_argument("--min-instances", type=int, default=0, help="instances kept running (default 0)")
    parser.add_argument("--max-instances", type=int, default=None,
                        help="upper bound on instances (default: from cores and free memory)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="seconds an instance may stay idle before it is stopped (default 60)")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="requests that may wait for an instance; more get 503 (default 64)")
    parser.add_argument("--queue-timeout", type=float, default=30.0,
                        help="seconds a request may wait for an instance before 503 (default 30)")
    parser.add_argument("--start-timeout", type=float, default=300.0,
                        help="seconds one instance may take to start before the start counts as failed "
                        "(default 300)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds in-flight requests may take to finish on SIGTERM or SIGINT (default 30)")
    parser.add_argument("--snapshot-cache", type=Path, default=None,
                        help="directory for snapshots made from a model SOURCE "
                        "(default: $XDG_CACHE_HOME/thaw/snapshots or ~/.cache/thaw/snapshots)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on every endpoint but /health, "
                        "at the gateway and at the instances (default: $THAW_API_KEY, or none)")
    add_engine_options(parser)
