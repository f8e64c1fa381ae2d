"""What the benches share: the processes they start (stopped however a run ends), scratch databases, management
commands with a clean environment, and progress lines. Nothing here measures anything."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
COMMAND_TIMEOUT_S = 300  # one management command (migrate on a cold PostgreSQL is the slowest)
START_TIMEOUT_S = 60  # a process listening on its port (the profiled gateway starts slowly)
STOP_TIMEOUT_S = 15


class BenchError(RuntimeError):
    """Something the bench relies on did not happen; the message says what."""


class Processes:
    """Every process the bench starts, stopped (TERM, then KILL) when the run ends, however it ends."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict, log_path: Path, port: int) -> subprocess.Popen:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.running.append(proc)
        try:
            wait_for_port(port, proc, log_path)
        except BaseException:
            self.stop(proc)
            raise
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.running)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            what = " ".join(map(str, proc.args[1:3]))
            raise BenchError(f"{what} exited with {proc.returncode} before listening; log:\n" + tail(log_path))
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)  # polling a port, bounded by the deadline
    raise BenchError(f"nothing listened on port {port} within {START_TIMEOUT_S} s; log:\n" + tail(log_path))


def tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:]


def clean_env() -> dict[str, str]:
    # The developer's database, Redis and keys must never leak into the bench's processes.
    dropped = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PORTCULLIS_SECRETS_KEY", "PORTCULLIS_STATE_DIR",
               "PORTCULLIS_ALLOWED_ORIGINS", "DJANGO_SETTINGS_MODULE")
    return {k: v for k, v in os.environ.items() if k not in dropped}


def gateway_env(database_url: str, state_dir: Path) -> dict[str, str]:
    return {**clean_env(), "DATABASE_URL": database_url, "PORTCULLIS_STATE_DIR": str(state_dir),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "PORTCULLIS_SECRETS_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "PORTCULLIS_ALLOWED_ORIGINS": "http://127.0.0.1", "LOG_LEVEL": "WARNING"}


def manage(env: dict, *args: str, stdin: str | None = None) -> str:
    try:
        done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, input=stdin, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"manage.py {' '.join(args)} took over {COMMAND_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


@contextlib.contextmanager
def scratch_postgres(base_url: str, name: str):
    """A fresh database `name` beside the given server's, dropped afterwards, however the run ends.

    The maintenance connection goes to the `postgres` database: the developer's own database is never opened.
    """
    import psycopg

    maintenance = with_database(base_url, "postgres")

    def drop(conn) -> None:
        # FORCE ends the sessions still on it; an autovacuum worker, which is the superuser's, it may not end
        # (InsufficientPrivilege): that one finishes within moments, so try again.
        for attempt in range(20):
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege:
                if attempt == 19:
                    raise
                time.sleep(0.5)

    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
            drop(conn)
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BenchError(f"cannot create {name} through {redacted(maintenance)}: {exc}") from None
    try:
        yield with_database(base_url, name)
    finally:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
            drop(conn)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def redacted(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_text(averages: tuple) -> str:
    return "/".join(f"{x:.1f}" for x in averages)


def set_up_server(env: dict, slug: str, upstream_url: str, policy: dict) -> str:
    """Schema, the upstream registered and its catalogue read, the policy applied and a grant; returns its token
    (through the real management commands, as an operator would)."""
    manage(env, "migrate", "--noinput")
    manage(env, "register_server", slug, "--http", upstream_url)
    manage(env, "refresh_tools", slug)
    manage(env, "apply_policy", slug, "-", stdin=json.dumps(policy))
    out = manage(env, "create_grant", "bench-agent", "--server", slug)
    match = re.search(r"token \(shown once[^)]*\):\s*(\S+)", out)
    if match is None:
        raise BenchError(f"create_grant printed no token:\n{out[:500]}")
    return match.group(1)


def pids_where(proc_file: str, matches: Callable[[bytes], bool]) -> list[int]:
    """The processes on this machine whose /proc/<pid>/<proc_file> matches (a server's own CPU per call)."""
    found = []
    for path in Path("/proc").glob(f"[0-9]*/{proc_file}"):
        try:
            if matches(path.read_bytes()):
                found.append(int(path.parent.name))
        except OSError:
            continue
    return found


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (its backends included), for its own CPU per call."""
    return pids_where("cmdline", lambda cmdline: cmdline.startswith(b"postgres"))


def redis_pids() -> list[int]:
    """The Redis server's processes on this machine, for its own CPU per call."""
    return pids_where("comm", lambda comm: comm.strip() == b"redis-server")
