"""Run the whole service in the foreground: export (if needed), Triton, gateway; Ctrl-C stops both.

    python -m serve [--model openai/clip-vit-base-patch16] [--port 50051] [--http-listen 127.0.0.1:8000]

The model is a Hub id or a local checkpoint folder. When it cannot be had (no network and not in
the local Hugging Face cache), the service says so in one line and serves the bundled demo model.
Once ready, it classifies the bundled sample image through the gateway to show it working.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clip_contract import artifacts
from configuration import flags
from configuration.flags import setting
from export import checkpoint as checkpoints
from export.config import ExportChoice
from export.hardware import cpu_info
from export.pipeline import ExportRefused, export
from gateway.config import ENV_PREFIX as GATEWAY_ENV_PREFIX
from gateway.config import GatewayConfig
from gateway.config import parse as parse_gateway
from launcher.server import LaunchError, ServerSettings, TritonServer, free_port
from launcher.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "clip-demo"
SAMPLE_IMAGE = ROOT / "models" / "samples" / "red_circle.png"
SAMPLE_LABELS = ["red circle", "blue square", "green triangle", "yellow star"]
ENV_PREFIX = "CLIP_SERVE_"
log = logging.getLogger("serve")


@dataclass(frozen=True)
class ServeConfig:
    """serve's own settings, around the exporter's (`export`): every export flag is a serve flag.
    The gateway's settings come from CLIP_GATEWAY_* (see `python -m gateway --help`); the listen
    addresses here override the few that serve sets itself."""

    export: ExportChoice = field(default_factory=ExportChoice)
    export_only: bool = setting(
        False, help="choose the model, export it to --repository, and exit (compose's export step)"
    )
    require_model: bool = setting(
        False, help="fail when the model cannot be had, instead of serving the bundled demo model (deployments)"
    )
    host: str | None = setting(None, help="gateway host", default_text="from CLIP_GATEWAY_LISTEN, else 127.0.0.1")
    port: int | None = setting(None, help="gateway port", default_text="from CLIP_GATEWAY_LISTEN, else 50051")
    triton_metrics_port: int = 8002
    metrics_listen: str | None = setting(
        None, help="gateway metrics address", default_text="CLIP_GATEWAY_METRICS_LISTEN"
    )
    http_listen: str | None = setting(
        None,
        help="OpenAI-compatible HTTP API address, empty for none",
        default_text="CLIP_GATEWAY_HTTP_LISTEN, else 127.0.0.1:8000",
    )
    repository: Path = ROOT / "build" / "model_repository"
    triton_log: Path = ROOT / "build" / "triton.log"


def choose_checkpoint(requested: str, fall_back: bool = True) -> checkpoints.Checkpoint:
    """The requested model, or (when `fall_back`) the bundled demo model when the requested one
    cannot be had."""
    try:
        return checkpoints.resolve(requested)
    except checkpoints.CheckpointError as error:
        if not fall_back:
            raise
        first_line = str(error).splitlines()[0]
        print(
            f"serve: {requested} is not available here ({first_line[:200]}); serving the bundled demo model "
            f"{DEMO_MODEL.relative_to(ROOT)} instead",
            file=sys.stderr,
        )
        return checkpoints.resolve(str(DEMO_MODEL))


def ensure_exported(ckpt: checkpoints.Checkpoint, out: Path, choice: ExportChoice) -> None:
    """Export unless `out` already holds this exact checkpoint, exported with these settings on a
    machine of this CPU model (auto precision and compiled code follow the machine)."""
    manifest_path = out / artifacts.MANIFEST
    precision, settings = choice.precision, choice.settings
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        wanted = (ckpt.weights_sha256(), precision, dataclasses.asdict(settings), cpu_info()["model"])
        found = (
            manifest.get("weights_sha256"),
            manifest.get("requested_precision"),
            manifest.get("settings"),
            manifest.get("machine", {}).get("model"),
        )
        if found == wanted:
            print(f"serve: {out} already holds it: {manifest.get('execution', '')}", file=sys.stderr)
            return
    print(f"serve: exporting {ckpt.model_id} ({precision}, {settings.device}) to {out}", file=sys.stderr)
    source = str(ckpt.folder) if ckpt.revision == "local" else ckpt.model_id
    try:
        manifest = export(source, out, precision, settings)
    except ExportRefused as error:
        raise SystemExit(f"serve: {error}") from None
    print(f"serve: exported: {manifest['execution']}", file=sys.stderr)


async def show_it_working(target: str) -> None:
    from clip_client import AsyncClipClient

    async with AsyncClipClient(target) as client:
        info = await client.model_info()
        result = await client.classify(SAMPLE_IMAGE, SAMPLE_LABELS)
    print(f"serve: {info.model_id} ({info.variant}, {info.precision}) answers on {target}", file=sys.stderr)
    if info.execution:
        print(f"serve: it runs {info.execution}", file=sys.stderr)
    print(f"serve: classify {SAMPLE_IMAGE.relative_to(ROOT)}:", file=sys.stderr)
    for score in result[0].labels:
        print(f"    {score.label:<16} {score.probability:7.2%}", file=sys.stderr)


async def show_http_working(base_url: str) -> None:
    """The same picture through the OpenAI-compatible HTTP API, as a data URI."""
    body = json.dumps(
        {
            "image": "data:image/png;base64," + base64.b64encode(SAMPLE_IMAGE.read_bytes()).decode(),
            "labels": SAMPLE_LABELS,
            "top_k": 1,
        }
    ).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/classifications", data=body, headers={"Content-Type": "application/json"}
    )
    answer = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(request, timeout=60)))
    best = answer["data"][0]["labels"][0]
    print(
        f"serve: HTTP API on {base_url}/v1 (OpenAPI at {base_url}/openapi.json): POST /v1/classifications "
        f"says {best['label']} {best['probability']:.2%}",
        file=sys.stderr,
    )


def supervise(
    supervisor: Supervisor, watching: threading.Event, stop: asyncio.Event, loop: asyncio.AbstractEventLoop
) -> None:
    """Restart Triton when it or a stub dies; when restarts run out, stop the whole service."""
    try:
        supervisor.run(watching)
    except LaunchError as error:
        print(f"serve: {error}", file=sys.stderr)
        loop.call_soon_threadsafe(stop.set)


def gateway_config(args: ServeConfig, triton_url: str, env: Mapping[str, str] = os.environ) -> GatewayConfig:
    """Every CLIP_GATEWAY_* setting from the environment (API keys, limits, TLS, ...), as
    `python -m gateway` reads them; serve's own flags win where given, and where neither says,
    serve's defaults: gRPC on 127.0.0.1:50051, HTTP API on 127.0.0.1:8000."""
    config = parse_gateway([], env)
    listen = config.listen
    if args.host is not None or args.port is not None:
        default_host, _, default_port = listen.rpartition(":")
        listen = f"{args.host or default_host}:{args.port if args.port is not None else default_port}"
    http_listen = args.http_listen
    if http_listen is None:
        http_listen = env.get(GATEWAY_ENV_PREFIX + "HTTP_LISTEN", "127.0.0.1:8000")
    metrics_listen = config.metrics_listen if args.metrics_listen is None else args.metrics_listen
    return dataclasses.replace(
        config, listen=listen, triton_url=triton_url, http_listen=http_listen, metrics_listen=metrics_listen
    )


def loopback_for(host: str) -> str:
    """Where this process reaches its own listener: a wildcard address is reached on loopback."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "[::]", "::") else host


async def run(args: ServeConfig) -> int:
    from gateway.observability import configure_logging
    from gateway.server import Gateway

    configure_logging("WARNING")
    stop = asyncio.Event()  # handlers first: a SIGTERM during start-up must still stop cleanly
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        ckpt = choose_checkpoint(args.export.model, fall_back=not args.require_model)
    except checkpoints.CheckpointError as error:
        print(f"serve: {args.export.model} is not available: {error}", file=sys.stderr)
        return 1
    ensure_exported(ckpt, args.repository, args.export)
    triton = TritonServer(
        ServerSettings(
            model_repository=args.repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=args.triton_metrics_port,
            log_file=args.triton_log,
        )
    )
    try:
        triton.start()  # on this thread: Triton is tied to the thread that starts it (PDEATHSIG)
    except LaunchError as error:
        print(f"serve: {error}", file=sys.stderr)
        return 1
    watching = threading.Event()  # set to end supervision
    supervision = threading.Thread(
        target=supervise, args=(Supervisor(triton), watching, stop, asyncio.get_running_loop()), daemon=True
    )
    supervision.start()
    config = gateway_config(args, triton.grpc_url)
    gateway = await Gateway.start(config)
    try:
        host = config.listen.rpartition(":")[0]
        target = f"{loopback_for(host)}:{gateway.port}"
        await show_it_working(target)
        if gateway.http is not None:
            http_host = loopback_for(config.http_listen.rpartition(":")[0])
            await show_http_working(f"http://{http_host}:{gateway.http.port}")
        print(f"serve: ready on {target} (Triton log: {args.triton_log}); Ctrl-C stops", file=sys.stderr)
        await stop.wait()
    finally:
        await gateway.stop()
        watching.set()
        supervision.join(30)
        triton.stop()
        print("serve: stopped", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None = None, env: Mapping[str, str] = os.environ) -> ServeConfig:
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description=__doc__,
        epilog="Every flag also reads a CLIP_SERVE_* environment variable; the gateway's settings are "
        "CLIP_GATEWAY_* (python -m gateway --help).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return flags.parse(ServeConfig, parser, argv, env, ENV_PREFIX)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.export_only:
        try:
            ckpt = choose_checkpoint(args.export.model, fall_back=not args.require_model)
        except checkpoints.CheckpointError as error:
            print(f"serve: {args.export.model} is not available: {error}", file=sys.stderr)
            return 1
        ensure_exported(ckpt, args.repository, args.export)
        return 0
    return asyncio.run(run(args))
