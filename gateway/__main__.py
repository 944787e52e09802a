"""Run the clip-serve gRPC gateway in front of a running Triton.

    python -m gateway --listen 127.0.0.1:50051 --triton-url 127.0.0.1:8001

All flags also read CLIP_GATEWAY_* environment variables; see `--help`.
"""

from __future__ import annotations

import asyncio
import sys

import configuration.threads  # noqa: F401  (first: before numpy loads)
from gateway.config import LimitsConflict, parse
from gateway.observability import configure_logging
from gateway.server import Gateway


async def _main() -> None:
    config = parse()
    configure_logging(config.log_level)
    gateway = await Gateway.start(config)
    await gateway.serve_until_signalled()


def main() -> int:
    try:
        asyncio.run(_main())
    except LimitsConflict as conflict:
        print(f"gateway: refusing to serve: {conflict}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
