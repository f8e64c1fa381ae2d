"""Portcullis beside the transparent MCP proxies, in one run, on the same echo upstream (issue 18's table):

    direct                      the echo upstream over Streamable HTTP (bench/echo_upstream.py)
    supergateway (npm)          stdio echo upstream behind supergateway's Streamable HTTP (transparent, Node)
    mcp-proxy (PyPI)            stdio echo upstream behind mcp-proxy's Streamable HTTP (transparent, Python)
    Portcullis, stdio upstream  policy + a counter on every call + the audit row, stdio echo upstream
    Portcullis, HTTP upstream   the same, HTTP echo upstream

The same raw keep-alive client as `python -m bench` (session era, one MCP session per connection; it checks every
echo): p50/p99 at concurrency 1 over the latency calls, throughput at 1/4/16 for the run's seconds, and each
proxy's CPU per call read from /proc around the c=16 run. Ratios are to direct.

Run: .venv/bin/python -m bench.peers_bench [--quick] [--db sqlite|postgres] [--postgres-url URL]

The peers are pinned and installed on first use, outside the project's environment: supergateway from npm into
var/bench-peers/node (npm), mcp-proxy from PyPI into its own virtual environment var/bench-peers/mcp-proxy (so its
dependencies never meet the gateway's). Nothing here runs in the product.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_bench import (
    CONCURRENCIES,
    DEFAULT_POSTGRES_URL,
    FULL_PLAN,
    POLICY,
    QUICK_PLAN,
    TOOL,
    Endpoint,
    SideResult,
    measure_side,
    start_gateway,
    start_upstream,
)
from bench.harness import (
    PY,
    ROOT,
    BenchError,
    Processes,
    clean_env,
    free_port,
    gateway_env,
    manage,
    say,
    set_up_server,
)

SUPERGATEWAY = "supergateway@4.0.0"
MCP_PROXY = "mcp-proxy==0.13.0"
PEERS = ROOT / "var" / "bench-peers"
STDIO_ECHO = [PY, "-m", "bench.echo_upstream", "--stdio"]


def install_peers() -> tuple[list[str], list[str]]:
    """(supergateway argv prefix, mcp-proxy argv prefix), installed once under var/bench-peers."""
    node_dir, proxy_venv = PEERS / "node", PEERS / "mcp-proxy"
    supergateway = node_dir / "node_modules" / ".bin" / "supergateway"
    if not supergateway.exists():
        say(f"installing {SUPERGATEWAY} into {node_dir} (once)")
        node_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(node_dir), SUPERGATEWAY],
                       check=True, capture_output=True, timeout=600)
    proxy = proxy_venv / "bin" / "mcp-proxy"
    if not proxy.exists():
        say(f"installing {MCP_PROXY} into its own virtual environment {proxy_venv} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(proxy_venv)], check=True, timeout=300)
        subprocess.run([str(proxy_venv / "bin" / "pip"), "install", "--quiet", MCP_PROXY], check=True,
                       capture_output=True, timeout=900)
    node = shutil.which("node") or str(ROOT / "node_modules" / ".bin" / "node")
    return [node, str(supergateway)], [str(proxy)]


@dataclass
class Target:
    label: str
    url: str
    token: str | None
    pid: int  # the proxy's own process (its CPU per call)
    upstream_pid: int | None = None


def start_supergateway(procs: Processes, prefix: list[str], tmp: Path) -> Target:
    port = free_port()
    proc = procs.start([*prefix, "--stdio", " ".join(STDIO_ECHO), "--outputTransport", "streamableHttp",
                        "--stateful", "--port", str(port), "--logLevel", "none"], clean_env(),
                       tmp / "supergateway.log", port)
    return Target("supergateway 4.0 (Node, transparent, stdio upstream)", f"http://127.0.0.1:{port}/mcp", None,
                  proc.pid)


def start_mcp_proxy(procs: Processes, prefix: list[str], tmp: Path) -> Target:
    port = free_port()
    proc = procs.start([*prefix, "--port", str(port), "--host", "127.0.0.1", "--", *STDIO_ECHO], clean_env(),
                       tmp / "mcp-proxy.log", port)
    return Target("mcp-proxy 0.13 (Python, transparent, stdio upstream)", f"http://127.0.0.1:{port}/mcp", None,
                  proc.pid)


def prepare_portcullis(env: dict, upstream_url: str) -> tuple[str, str]:
    """Two servers under the same policy: `bench` (the HTTP echo) and `bench-stdio` (the stdio echo); one grant."""
    token = set_up_server(env, "bench", upstream_url, POLICY)
    manage(env, "register_server", "bench-stdio", "--stdio", " ".join(STDIO_ECHO))
    manage(env, "refresh_tools", "bench-stdio")
    manage(env, "apply_policy", "bench-stdio", "-", stdin=json.dumps(POLICY))
    out = manage(env, "create_grant", "bench-agent-stdio", "--server", "bench-stdio")
    match = re.search(r"token \(shown once[^)]*\):\s*(\S+)", out)
    if match is None:
        raise BenchError(f"create_grant printed no token:\n{out[:500]}")
    return token, match.group(1)


async def measure(target: Target, plan) -> SideResult:
    pids = {"proxy": target.pid}
    say(f"  {target.label}: {target.url}")
    return await measure_side(Endpoint(target.url, target.token, pids), plan)


def row(label: str, side: SideResult, direct: SideResult) -> str:
    c16 = side.throughput[CONCURRENCIES[-1]]
    ratio = c16.rate / direct.throughput[CONCURRENCIES[-1]].rate
    added = side.percentile(50) - direct.percentile(50)
    cpu = c16.cpu_ms_per_call.get("proxy")
    cpu_text = f"{cpu:.2f} ms" if cpu is not None else "—"
    return f"| {label} | {'+' if added >= 0 else ''}{added:.2f} ms | {ratio:.0%} | {cpu_text} |"


async def run(opts, procs: Processes, tmp: Path) -> list[str]:
    super_prefix, proxy_prefix = install_peers()
    upstream_proc, upstream_url = start_upstream(procs, tmp)
    database_url = (f"sqlite:///{tmp / 'bench.sqlite3'}" if opts.db == "sqlite" else opts.postgres_url)
    env = gateway_env(database_url, tmp / "state")
    say(f"Portcullis database: {opts.db}; preparing both servers")
    http_token, stdio_token = prepare_portcullis(env, upstream_url)
    gateway_proc, http_url = start_gateway(procs, env, tmp / "gateway.log")
    stdio_url = http_url.replace("/mcp/bench/", "/mcp/bench-stdio/")
    targets = [
        Target("direct (HTTP echo)", upstream_url, None, upstream_proc.pid),
        start_supergateway(procs, super_prefix, tmp),
        start_mcp_proxy(procs, proxy_prefix, tmp),
        Target("Portcullis, stdio upstream, policy + counter + audit", stdio_url, stdio_token, gateway_proc.pid),
        Target("Portcullis, HTTP upstream, policy + counter + audit", http_url, http_token, gateway_proc.pid),
    ]
    results = {}
    for target in targets:
        results[target.label] = await measure(target, opts.plan)
    direct = results[targets[0].label]
    lines = [f"direct: p50 {direct.percentile(50):.2f} ms at c=1, "
             f"{direct.throughput[CONCURRENCIES[-1]].rate:.0f} calls/s at c=16", "",
             "| target | added p50 at c=1 | throughput at c=16 vs direct | proxy CPU per call (c=16) |",
             "|---|---|---|---|"]
    lines += [row(t.label, results[t.label], direct) for t in targets[1:]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and 2 s runs")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    opts = parser.parse_args(argv)
    opts.plan = QUICK_PLAN if opts.quick else FULL_PLAN
    procs = Processes()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="portcullis-peers-bench-") as tmp:
            lines = asyncio.run(run(opts, procs, Path(tmp)))
    except BenchError as exc:
        say(f"peers bench failed: {exc}")
        return 1
    finally:
        procs.stop_all()
    load = os.getloadavg()
    print(f"Portcullis beside the transparent proxies ({opts.db}; tool {TOOL}; {time.time() - started:.0f} s; "
          f"load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f})")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
