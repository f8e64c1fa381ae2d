"""Shared fixtures: servers, a grant that may, one for another server, a revoked one."""

from __future__ import annotations

import pytest
from django.utils import timezone

from gateway.grants import create_grant, revoke
from gateway.models import Server


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
