"""Fixtures for the approvals queue and the live dashboard (imported by their test modules; holds no tests).

A small server whose `share_create` tool needs approval, a grant that may use it, and `hold(arguments)`: what
the gateway does when it holds a call (gateway.approvals.pending_for with the call's Binding).
"""

from __future__ import annotations

import hashlib
import json

import pytest
from django.utils import timezone

from gateway import policies
from gateway.calls import approvals
from gateway.grants import create_grant
from gateway.models import Approval, Call, Server, Tool

__all__ = ["hold", "nas"]

POLICY = {"version": "1", "default": "deny", "tools": {"share_create": {"action": "approve"}}}


def make_nas() -> tuple[Server, Tool]:
    server = Server.objects.create(slug="nas", name="NAS", transport=Server.Transport.STDIO, command=["nas-sim"])
    tool = Tool.objects.create(server=server, name="share_create", description="Create an SMB share",
                               input_schema={"type": "object"}, definition={"name": "share_create"},
                               definition_hash="a" * 64, approved_hash="a" * 64, risk_category="write",
                               risk_level="high")
    policies.apply(server, POLICY, actor="test")
    return server, tool


def hold_call(server: Server, tool: Tool, grant, arguments: dict) -> Approval:
    """Create (or join) the pending approval the gateway makes for a held call, and publish it; the held call's
    audit row stays pending while its agent waits, as the gateway writes it."""
    digest = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()
    binding = approvals.Binding(grant=grant, server=server, tool=tool, argument_hash=digest, arguments=arguments,
                                policy_version_id=policies.applicable(server, grant).pk, rule="/tools/share_create")
    approval = approvals.pending_for(binding, timezone.now())
    Call.objects.create(server=server, server_slug=server.slug, grant=grant, grant_name=grant.name,
                        tool_name=tool.name, arguments=arguments, argument_hash=digest, decision="approve",
                        outcome="pending", approval=approval)
    approvals.publish(approval)  # after the row, as the gateway does
    return approval


@pytest.fixture
def nas(db):
    server, tool = make_nas()
    grant = create_grant("agent-a", [server], None).grant
    return {"server": server, "tool": tool, "grant": grant}


@pytest.fixture
def hold(nas):
    def make(arguments: dict | None = None) -> Approval:
        arguments = arguments or {"name": "media", "password": "[redacted]"}
        return hold_call(nas["server"], nas["tool"], nas["grant"], arguments)

    return make
