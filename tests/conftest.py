"""Shared fixtures: servers, a grant that may, one for another server, a revoked one; real processes (a gateway,
HTTP peers, redis-server) for tests/e2e and tests/browser; the dashboard's fixtures (tests/dashboard/fixtures.py,
approval_fixtures.py) for every folder that drives the dashboard."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from gateway.grants import create_grant, revoke
from gateway.models import Server
from tests.password_hashing import use_quick_hashing

pytest_plugins = ("tests.dashboard.fixtures", "tests.dashboard.approval_fixtures")


def _own_redis_database() -> None:
    """Under pytest-xdist (`-n`) each worker uses a Redis database of its own: REDIS_URL's number plus the worker's
    plus one. One worker's live events and messages between gateway processes then never reach the other's
    gateways, which share the server. Its gateway subprocesses inherit it from the environment. (Each worker has its
    own test database already: pytest-django names it after the worker.)"""
    from urllib.parse import urlsplit, urlunsplit

    from django.conf import settings

    worker, url = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("REDIS_URL")
    if not worker or not url:
        return
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or 0) + 1 + int(worker.removeprefix("gw"))
    own = urlunsplit(parts._replace(path=f"/{number}"))
    os.environ["REDIS_URL"] = settings.REDIS_URL = own
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] = own


_own_redis_database()
use_quick_hashing()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database; before it is dropped, the connections other threads opened are closed (on
    PostgreSQL an open one keeps the database in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from gateway.calls import dbthreads, loop_database

    dbthreads.close_connections()
    loop_database.close_all()
    # In-process tests that await sync_to_async(thread_sensitive=True) outside a request leave a connection open in
    # asgiref's shared thread.
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@contextlib.contextmanager
def unreachable_table(model):
    """The model's table renamed away for the block, as in an outage: every query of it fails with a database
    error. The connection is closed before the name is given back (the failed ones may be in a broken state)."""
    from django.db import connection

    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO portcullis_unreachable")  # noqa: S608 - a model's table
    try:
        yield
    finally:
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE portcullis_unreachable RENAME TO {table}")  # noqa: S608


@pytest.fixture
def server(db) -> Server:
    srv = Server(slug="files", name="Files", transport=Server.Transport.STDIO, command=["mcp-files", "--root", "/srv"])
    srv.env = {"FILES_API_KEY": "sk-live-0123456789abcdef"}
    srv.save()
    return srv


@pytest.fixture
def other_server(db) -> Server:
    srv = Server(slug="other", name="Other", transport=Server.Transport.HTTP, url="http://127.0.0.1:9/mcp")
    srv.headers = {"Authorization": "Bearer upstream-secret-value-42"}
    srv.save()
    return srv


@pytest.fixture
def grant_that_may(server):
    return create_grant("agent-may", [server], None)


@pytest.fixture
def grant_for_other_server(other_server):
    return create_grant("agent-other", [other_server], None)


@pytest.fixture
def revoked_grant(server):
    new = create_grant("agent-revoked", [server], None)
    revoke(new.grant, timezone.now())
    return new


# --- a real gateway: daphne in a subprocess, on the test database ---


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_for_subprocess() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}" if s["NAME"].startswith("/") else f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a port: bounded by the deadline above
    raise RuntimeError(f"nothing listened on {port} within {timeout} s")


@contextlib.contextmanager
def http_peer(argv: list[str], env: dict | None = None, quiet: bool = False):
    """A real upstream process serving Streamable HTTP on a free port: `{port}` in argv (or PORT in env, for
    server-everything) is replaced by the port. Yields its /mcp URL; stopped however the test ends."""
    port = free_port()
    out = subprocess.DEVNULL if quiet else None
    by_env = not any("{port}" in arg for arg in argv)
    proc = subprocess.Popen([arg.replace("{port}", str(port)) for arg in argv], cwd=ROOT, stdout=out, stderr=out,
                            env={**os.environ, **({"PORT": str(port)} if by_env else {}), **(env or {})})
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


def register_http_server(slug: str, url: str, policy: dict, name: str = "") -> Server:
    """An HTTP upstream registered, its catalogue read with the real command, and a policy applied."""
    import io

    from django.core.management import call_command

    from gateway import policies

    server = Server.objects.create(slug=slug, name=name or slug, transport=Server.Transport.HTTP, url=url,
                                   timeout_seconds=10)
    call_command("refresh_tools", slug, stdout=io.StringIO())
    policies.apply(server, policy, actor="test")
    return server


FAULT_SERVER = str(ROOT / "tests" / "peers" / "fault_server.py")


def register_fault_server(slug: str = "faulty", timeout: int = 10) -> tuple[Server, str]:
    """The misbehaving stdio server (tests/peers/fault_server.py) registered, its catalogue read, every tool allowed;
    returns it and the token of a grant for it."""
    import io

    from django.core.management import call_command

    from gateway import policies
    from gateway.grants import create_grant

    server = Server.objects.create(slug=slug, name=slug, transport=Server.Transport.STDIO, timeout_seconds=timeout,
                                   command=[sys.executable, FAULT_SERVER])
    call_command("refresh_tools", slug, stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "allow"}, actor="test")
    return server, create_grant(f"agent-{server.pk}", [server], None).token


class Gateway:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log_path
        self.base = f"http://127.0.0.1:{port}"

    def url(self, slug: str) -> str:
        return f"{self.base}/mcp/{slug}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(tmp_dir: Path, extra_env: dict | None = None) -> Gateway:
    from django.conf import settings

    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "SECRET_KEY": settings.SECRET_KEY,
           "PORTCULLIS_SECRETS_KEY": settings.PORTCULLIS_SECRETS_KEY, "PORTCULLIS_STATE_DIR": str(tmp_dir),
           "PORTCULLIS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port},http://localhost:{port}",
           "PORTCULLIS_SERVED_URL": f"http://127.0.0.1:{port}",  # `make test` exports make run's own (port 8000)
           "TRUENAS_SIM_JOB_SECONDS": "0.3", "PORTCULLIS_DRAIN_S": "5", **(extra_env or {})}
    log_path = tmp_dir / f"daphne-{port}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "config.serve", "-v", "1", "-b", "127.0.0.1", "-p", str(port),
                             "config.asgi:application"], cwd=ROOT, env=env, stdout=log_file,
                            stderr=subprocess.STDOUT)
    wait_for_port(port, proc)
    return Gateway(proc, port, log_path)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(django_db_setup, django_db_blocker, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def redis_url():
    """REDIS_URL when set (CI), else a redis-server of our own on a free port."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    exe = shutil.which("redis-server")
    if exe is None:  # fail loudly: `make test` installs Debian's redis-server
        raise AssertionError("redis-server is not installed: run `make test` (it installs it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    yield f"redis://127.0.0.1:{port}/0"
    stop(proc)
