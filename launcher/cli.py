"""Run Triton on an exported model repository until Ctrl-C or SIGTERM.

    python -m launcher --model-repository build/model_repository [--grpc-port 8001] [--log-file PATH]

Checks the ports first, waits (with a deadline) until every model is ready, prints which
checkpoint it serves, then stays in the foreground, restarting Triton when it exits or one of its
Python-backend stubs dies; Ctrl-C or SIGTERM stops Triton cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from launcher.runtime import RuntimeMissing
from launcher.server import LaunchError, ServerSettings, TritonServer, manifest, repository_location
from launcher.supervisor import Supervisor


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = ServerSettings(model_repository=Path("build/model_repository"))
    parser = argparse.ArgumentParser(
        prog="python -m launcher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-repository",
        type=repository_location,
        default=defaults.model_repository,
        help="an exported repository: a folder, or object storage Triton reads itself (s3://, gs://, as://)",
    )
    parser.add_argument("--address", default=defaults.address)
    parser.add_argument("--grpc-port", type=int, default=defaults.grpc_port)
    parser.add_argument("--http-port", type=int, default=defaults.http_port)
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port)
    parser.add_argument("--log-file", type=Path, help="write Triton's log here instead of stdout")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=defaults.work_dir,
        help="where Triton's Python backend is prepared (env CLIP_SERVE_TRITON_DIR, default %(default)s)",
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for the models")
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="restarts of a Triton that exits, loses a stub or hangs, per 10 minutes (%(default)s)",
    )
    parser.add_argument(
        "--hang-timeout",
        type=float,
        default=60.0,
        help="restart a Triton that has not answered its liveness check for this many seconds; 0: never (%(default)s)",
    )
    parser.add_argument("--response-cache-mb", type=int, default=defaults.response_cache_bytes >> 20)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = TritonServer(
        ServerSettings(
            model_repository=args.model_repository,
            address=args.address,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            metrics_port=args.metrics_port,
            log_file=args.log_file,
            work_dir=args.work_dir,
            response_cache_bytes=args.response_cache_mb << 20,
        )
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server.start(ready_timeout=args.ready_timeout)
    except (LaunchError, RuntimeMissing) as error:
        print(f"launcher: {error}", file=sys.stderr)
        return 1
    served = manifest(args.model_repository)
    what = (
        f"{served.get('model_id', '?')} ({served.get('variant', '?')}, {served.get('precision', '?')})"
        if served
        else str(args.model_repository)
    )
    print(f"launcher: Triton ready on grpc {server.grpc_url}, serving {what}; Ctrl-C stops it", file=sys.stderr)
    if served.get("execution"):
        print(f"launcher: {served['execution']}", file=sys.stderr)
    if args.hang_timeout < 0:
        print("launcher: --hang-timeout is 0 (off) or more seconds", file=sys.stderr)
        return 2
    supervisor = Supervisor(server, max_restarts=args.max_restarts, hang_timeout=args.hang_timeout)
    try:
        supervisor.run(stop)
    except LaunchError as error:
        print(f"launcher: {error}", file=sys.stderr)
        server.stop()
        return 1
    code = server.stop()
    print(f"launcher: Triton stopped (exit code {code})", file=sys.stderr)
    return 0
