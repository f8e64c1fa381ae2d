"""Command line: ``python -m truenas_sim [--umbrella] [--http --port N]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .base import JOB_SECONDS_ENV
from .server import Simulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m truenas_sim",
        description="Serve a simulated TrueNAS host over MCP (stdio by default).",
        epilog=f"Job duration in seconds comes from ${JOB_SECONDS_ENV} (default 2).",
    )
    parser.add_argument("--umbrella", action="store_true",
                        help="list only the single 'truenas' tool, like the real server (default: 278 flat tools)")
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP at http://127.0.0.1:PORT/mcp")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (with --http; default 8765)")
    parser.add_argument("--log-level", default="WARNING", help="Python log level written to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    sim = Simulator(umbrella=args.umbrella)
    try:
        asyncio.run(sim.serve_http(args.port) if args.http else sim.serve_stdio())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
