"""What an audit row keeps of a call's arguments: redacted, at most PORTCULLIS_AUDIT_ARGUMENT_BYTES of JSON (past
it a prefix, the size and the hash), for allowed and refused calls alike, and with NUL characters escaped so that
PostgreSQL can store them (the call is audited and forwarded with its arguments as the agent sent them)."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from gateway import calls, policies
from gateway.calls import audit
from gateway.catalogue.sync import sync_tools
from gateway.models import Approval, Call

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = {"version": "1", "default": "deny",
          "tools": {"write_file": {}, "delete_file": {"action": "approve"}}}


@pytest.fixture
def catalogued(server):
    sync_tools(server, [{"name": n, "inputSchema": {"type": "object"}} for n in ("write_file", "delete_file",
                                                                                   "read_secret")], timezone.now())
    policies.apply(server, POLICY, actor="test")
    return server


@pytest.mark.parametrize("tool", ["write_file", "read_secret", "delete_file"], ids=["allowed", "refused", "held"])
def test_a_large_argument_is_stored_as_a_prefix_its_size_and_hash(catalogued, grant_that_may, settings, tool):
    settings.PORTCULLIS_AUDIT_ARGUMENT_BYTES = 1024
    arguments = {"path": "/srv/big", "content": "x" * 200_000}
    admission = calls.admit(grant_that_may.token, catalogued, tool, arguments, timezone.now())
    row = Call.objects.get(pk=admission.call_id)
    stored = row.arguments["_truncated"]
    assert len(json.dumps(row.arguments)) < 1024 + 200
    full = json.dumps(arguments, ensure_ascii=False)
    assert stored["bytes"] == len(full.encode()) and stored["sha256"] == row.argument_hash
    assert full.startswith(stored["prefix"]) and len(stored["prefix"].encode()) <= 1024
    if tool == "delete_file":
        assert "_truncated" in Approval.objects.get().arguments  # the approver sees the same, and the hash binds


def test_a_small_argument_is_stored_whole(catalogued, grant_that_may):
    admission = calls.admit(grant_that_may.token, catalogued, "write_file", {"path": "/a", "content": "b"},
                            timezone.now())
    assert Call.objects.get(pk=admission.call_id).arguments == {"path": "/a", "content": "b"}


@pytest.mark.parametrize("tool", ["write_file", "read_secret", "delete_file", "no\x00such"],
                         ids=["allowed", "refused", "held", "unknown-tool-name"])
def test_a_nul_character_is_stored_escaped_and_the_call_is_audited(catalogued, grant_that_may, tool):
    """PostgreSQL's text and jsonb cannot hold U+0000: without escaping there is no row, and no call."""
    arguments = {"path": "/srv/a\x00b", "k\x00ey": ["\x00"]}
    admission = calls.admit(grant_that_may.token, catalogued, tool, arguments, timezone.now())
    assert admission.call_id is not None, admission.message
    assert admission.forward == (tool == "write_file")
    row = Call.objects.get(pk=admission.call_id)
    assert row.arguments == {"path": "/srv/a\\u0000b", "k\\u0000ey": ["\\u0000"]}
    assert row.argument_hash == audit.argument_hash(arguments)  # the hash is of what the agent sent
    assert "\x00" not in row.tool_name and row.tool_name.replace("\\u0000", "\x00") == tool


def test_the_call_page_says_the_arguments_were_cut_and_how_to_identify_them(catalogued, grant_that_may, settings,
                                                                           client, django_user_model):
    settings.PORTCULLIS_AUDIT_ARGUMENT_BYTES = 512
    admission = calls.admit(grant_that_may.token, catalogued, "read_secret", {"blob": "y" * 5000}, timezone.now())
    row = Call.objects.get(pk=admission.call_id)
    client.force_login(django_user_model.objects.create_user("viewer", password="x" * 12, is_staff=True))
    page = client.get(f"/calls/{row.pk}/").content.decode()
    assert "only the first 512 are kept" in page and row.argument_hash in page
