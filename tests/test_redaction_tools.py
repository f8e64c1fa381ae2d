"""Every secret a TrueNAS tool takes is kept out of the audit row: by key names (pass, monpwd, community, a raw ZFS
key, encryption_key, ...), environment name/value lists, the tool's own schema (format password, writeOnly) and
per-tool configuration (PORTCULLIS_REDACT_FIELDS). The schemas are the real ones (tests/data/truenas-tools.tsv)."""

from __future__ import annotations

import csv
import json

import pytest
from django.utils import timezone

from gateway import calls, policies
from gateway.catalogue.sync import sync_tools
from gateway.models import Approval, Call
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMAS = {row["name"]: json.loads(row["params"]) for row in csv.DictReader(
    (ROOT / "tests" / "data" / "truenas-tools.tsv").open(encoding="utf-8"), delimiter="\t")}

# (tool, arguments with secrets in them): every secret-bearing parameter of the 279 tools
SECRET_CALLS = [
    ("mail_update", {"fromemail": "nas@example.org", "user": "nas", "pass": "S1-mail-pass"}),
    ("pool_create", {"name": "tank", "encryption": True,
                     "encryption_options": {"key": "S2-raw-zfs-key-0123456789abcdef", "passphrase": "S3-pool-phrase"}}),
    ("dataset_create", {"name": "tank/x", "encryption_options": {"key": "S4-dataset-raw-key", "passphrase": "S5-ds"}}),
    ("dataset_unlock", {"id": "tank/x", "unlock_options": {
        "key": "S6-unlock-key", "passphrase": "S7-unlock-phrase",
        "datasets": [{"name": "tank/x/y", "key": "S8-child-key", "passphrase": "S9-child-phrase"}]}}),
    ("user_create", {"username": "bob", "full_name": "Bob", "password": "S10-user-password"}),
    ("user_set_password", {"username": "bob", "old_password": "S11-old-password", "password": "S12-new-password"}),
    ("disk_update", {"id": "sda", "passwd": "S13-disk-passwd"}),
    ("certificate_create", {"name": "c", "privatekey": "S14-private-key-pem-body", "key_type": "RSA"}),
    ("replication_create", {"name": "r", "encryption_key": "S15-replication-key", "encryption_key_format": "HEX"}),
    ("cloudsync_create", {"description": "c", "credentials": 3, "encryption_password": "S16-cloudsync-pass"}),
    ("cloud_backup_create", {"description": "b", "credentials": 3, "password": "S17-restic-password"}),
    ("directory_services_leave", {"username": "admin", "password": "S18-ad-password"}),
    ("snmp_config_update", {"community": "S19-community", "v3_password": "S20-v3-pass",
                            "v3_privpassphrase": "S21-v3-priv"}),
    ("ups_config_update", {"monuser": "upsmon", "monpwd": "S22-monpwd"}),
    ("app_create", {"app_name": "db", "catalog_app": "postgres", "values": {
        "env": [{"name": "POSTGRES_PASSWORD", "value": "S23-env-list-value"}, {"name": "TZ", "value": "UTC"}],
        "environment": {"API_TOKEN": "S24-env-map-value"}}}),
    ("app_update", {"id": "db", "values": {"secrets": {"anything": "S25-under-secrets"}}}),
]


@pytest.fixture
def truenas(server):
    sync_tools(server, [{"name": n, "inputSchema": s} for n, s in SCHEMAS.items()], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"user_create": {"action": "approve"}}},
                   actor="test")
    return server


def secrets_in(arguments: object) -> list[str]:
    """The planted secrets (S<n>-...) found in a stored copy."""
    return [s for s in json.dumps(arguments).split('"')
            if s.startswith("S") and "-" in s and s[1:s.index("-")].isdigit()]


@pytest.mark.parametrize(("tool", "arguments"), SECRET_CALLS, ids=[t for t, _ in SECRET_CALLS])
def test_no_secret_of_a_truenas_tool_is_stored(truenas, grant_that_may, tool, arguments):
    assert tool in SCHEMAS
    assert secrets_in(arguments)  # the case does carry secrets
    admission = calls.admit(grant_that_may.token, truenas, tool, arguments, timezone.now())
    stored = Call.objects.get(pk=admission.call_id).arguments
    assert secrets_in(stored) == []
    for approval in Approval.objects.all():
        assert secrets_in(approval.arguments) == []


def test_what_is_not_secret_stays_readable(truenas, grant_that_may):
    arguments = dict(SECRET_CALLS[-2][1])
    admission = calls.admit(grant_that_may.token, truenas, "app_create", arguments, timezone.now())
    stored = Call.objects.get(pk=admission.call_id).arguments
    assert stored["app_name"] == "db" and stored["values"]["env"][1] == {"name": "TZ", "value": "UTC"}
    assert stored["values"]["env"][0]["name"] == "POSTGRES_PASSWORD"


def test_the_tools_schema_marks_secrets_too(server, grant_that_may):
    schema = {"type": "object", "properties": {
        "login": {"type": "string"},
        "pin": {"type": "string", "format": "password"},
        "opaque": {"type": "string", "writeOnly": True},
        "nested": {"type": "object", "properties": {"word": {"type": "string", "format": "password"}}},
        "many": {"type": "array", "items": {"type": "object", "properties": {"w": {"writeOnly": True}}}}}}
    sync_tools(server, [{"name": "vault_open", "inputSchema": schema}], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny"}, actor="test")
    arguments = {"login": "me", "pin": "S31-pin", "opaque": "S32-opaque", "nested": {"word": "S33-word"},
                 "many": [{"w": "S34-w"}, {"w": "S35-w"}]}
    admission = calls.admit(grant_that_may.token, server, "vault_open", arguments, timezone.now())
    stored = Call.objects.get(pk=admission.call_id).arguments
    assert secrets_in(stored) == [] and stored["login"] == "me"


def test_fields_listed_in_settings_are_redacted_for_matching_tools(server, grant_that_may, settings):
    settings.PORTCULLIS_REDACT_FIELDS = ["vault_*:answer", "vault_open:deep.inner"]
    sync_tools(server, [{"name": "vault_open", "inputSchema": {"type": "object"}}], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny"}, actor="test")
    arguments = {"answer": "S41-answer", "deep": {"inner": "S42-inner", "other": "fine"}}
    admission = calls.admit(grant_that_may.token, server, "vault_open", arguments, timezone.now())
    stored = Call.objects.get(pk=admission.call_id).arguments
    assert secrets_in(stored) == [] and stored["deep"]["other"] == "fine"
