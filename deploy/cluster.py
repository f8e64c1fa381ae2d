"""A local cluster for trying Portcullis as a team runs it: N gateway processes behind HAProxy (round-robin, no
stickiness) sharing one database and one channel layer.

    make cluster                  # 3 processes behind http://127.0.0.1:8000, with the demo loaded
    make cluster N=2 PORT=9000

Set DATABASE_URL and REDIS_URL (`.ci/run --services-only` prints them) for PostgreSQL and Redis; without them the
processes share the SQLite file and live updates stay within each process (fine for a try, not for a team). The
processes share SECRET_KEY and PORTCULLIS_SECRETS_KEY through the state directory's key file, or through the
environment when both are set there: every replica must have the same two. The tests start their cluster with
`start_cluster` and stop it with `Cluster.stop`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).with_name("haproxy.cfg.template")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def haproxy_config(bind: str, backends: list[int]) -> str:
    servers = "\n".join(f"    server gw{n} 127.0.0.1:{port}" for n, port in enumerate(backends, 1))
    return TEMPLATE.read_text().replace("${BIND}", bind).replace("${SERVERS}", servers)


@dataclass
class Cluster:
    port: int
    state_dir: Path
    env: dict
    gateways: dict[int, subprocess.Popen] = field(default_factory=dict)  # backend port → process
    haproxy: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, slug: str) -> str:
        return f"{self.base}/mcp/{slug}/"

    def start_gateway(self, port: int) -> subprocess.Popen:
        log = open(self.state_dir / f"gateway-{port}.log", "a")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "config.serve", "-v", "1", "-b", "127.0.0.1", "-p", str(port),
                                 "config.asgi:application"], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)
        wait_for_port(port, proc)
        self.gateways[port] = proc
        return proc

    def wait_ready(self, timeout: float = 30) -> None:
        """Every gateway answers /readyz and HAProxy has seen them up (two good checks)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        for port in self.gateways:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:  # noqa: S310
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway on {port} not ready after {timeout} s")
                time.sleep(0.2)
        time.sleep(1.5)  # rise 2 at fastinter 500 ms

    def stop(self) -> None:
        for proc in [*self.gateways.values(), self.haproxy]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.gateways.values(), self.haproxy]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def start_cluster(processes: int, port: int, state_dir: Path, extra_env: dict | None = None) -> Cluster:
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if haproxy is None:
        raise RuntimeError("haproxy is not installed: `make test` installs Debian's haproxy (apt-get install haproxy)")
    state_dir.mkdir(parents=True, exist_ok=True)
    public = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORTCULLIS_STATE_DIR": str(state_dir), "PORTCULLIS_PUBLIC_URL": public,
           # Every connection comes from HAProxy's address: the per-client cap is HAProxy's job here.
           "PORTCULLIS_CONNECTIONS_PER_CLIENT": "4096", **(extra_env or {})}
    cluster = Cluster(port=port, state_dir=state_dir, env=env)
    try:
        for _ in range(processes):
            cluster.start_gateway(free_port())
        config = state_dir / "haproxy.cfg"
        config.write_text(haproxy_config(f"127.0.0.1:{port}", list(cluster.gateways)))
        log = open(state_dir / "haproxy.log", "a")  # noqa: SIM115 - closed with the process
        cluster.haproxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(port, cluster.haproxy)
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--processes", type=int, default=3)
    parser.add_argument("-p", "--port", type=int, default=8000, help="HAProxy's port (the address agents use)")
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("PORTCULLIS_STATE_DIR", ROOT / "var")))
    args = parser.parse_args(argv)
    cluster = start_cluster(args.processes, args.port, args.state_dir)
    print(f"{args.processes} gateway processes behind {cluster.base} (HAProxy, round-robin); logs in "
          f"{args.state_dir}. Ctrl-C stops them (each drains first).", flush=True)
    try:
        while all(proc.poll() is None for proc in [*cluster.gateways.values(), cluster.haproxy]):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
