"""Fixtures shared by the dashboard's view tests (imported by each tests/test_dashboard_*.py; holds no tests).

The TrueNAS catalogue is loaded from tests/data/truenas-tools.tsv through gateway.catalogue.sync_tools, so the
pages are tested with all 279 tools without starting the simulator.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from gateway import policies
from gateway.catalogue.sync import sync_tools
from gateway.models import Server

# Star-imported by the test modules: pytest finds these fixtures in each module's namespace.
__all__ = ["csrf_client", "http_server", "reader", "reader_client", "staff", "staff_client", "superuser",
           "superuser_client", "truenas"]

TSV = Path(__file__).parents[1] / "data" / "truenas-tools.tsv"
ENV_SECRET = "tn-api-key-9f8e7d6c5b4a3210"  # a value that must never appear in a page
HEADER_SECRET = "Bearer hdr-secret-0011223344556677"
PASSWORD = "a-long-password-1"
HOSTILE_DESCRIPTION = ('<script>alert("x")</script><a href="javascript:alert(1)">click me</a>'
                       '<img src=x onerror=alert(2)> safe\u202etxt.exe\u202c end')


def truenas_definitions() -> list[dict]:
    with TSV.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    out = []
    for row in rows:
        definition = {"name": row["name"], "description": f"{row['middleware_method']} ({row['rest_route']})",
                      "inputSchema": {"type": "object", **json.loads(row["params"] or "{}")}}
        if row["annotations"]:
            definition["annotations"] = json.loads(row["annotations"])
        out.append(definition)
    return out


def seed_policy() -> dict:
    return json.loads(resources.files("gateway").joinpath("seed/truenas-policy.json").read_text())


def make_truenas(with_policy: bool = True) -> Server:
    server = Server(slug="truenas", name="TrueNAS (fixture)", transport=Server.Transport.STDIO,
                    command=["truenas-sim", "--fixture"])
    server.env = {"TRUENAS_API_KEY": ENV_SECRET}
    server.save()
    sync_tools(server, truenas_definitions(), timezone.now())
    if with_policy:
        policies.apply(server, seed_policy(), actor="test")
    return server


@pytest.fixture
def truenas(db) -> Server:
    return make_truenas()


@pytest.fixture
def http_server(db) -> Server:
    server = Server(slug="remote", name="Remote", transport=Server.Transport.HTTP, url="http://127.0.0.1:9/mcp")
    server.headers = {"Authorization": HEADER_SECRET}
    server.save()
    return server


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD, is_staff=True)


@pytest.fixture
def superuser(django_user_model):
    """A superuser: the only kind of user (with holders of gateway.change_server_command) who sets stdio commands."""
    return django_user_model.objects.create_user("root-admin", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def superuser_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def reader(django_user_model):
    return django_user_model.objects.create_user("bob", password=PASSWORD)


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def reader_client(reader) -> Client:
    client = Client()
    client.force_login(reader)
    return client


@pytest.fixture
def csrf_client(staff) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    return client


def htmx(**extra) -> dict:
    return {"HTTP_HX_REQUEST": "true", **extra}
