"""The management commands are the automation interface: their names, output and exit codes are contracts."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gateway import policies
from gateway.models import Grant, PolicyVersion, Server, Tool
from gateway.policy import canonical_json

ROOT = Path(__file__).resolve().parent.parent
SEED_EXAMPLE = {"version": "1", "default": "deny", "tools": {"cloud_backup_run": {"limits": [
    {"counter": "cloud_backup_run_rate", "window": "minute", "max": 10, "scope": "grant"}]}}}


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def manage(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", ["register_server", "refresh_tools", "create_grant", "revoke_grant",
                                     "apply_policy", "export_policy", "rollback_policy", "demo"])
def test_every_command_explains_itself(command):
    proc = manage(command, "--help")
    assert proc.returncode == 0
    assert len(proc.stdout) > 300


# --- register_server ---

def test_it_registers_a_stdio_server_splitting_the_command_line_without_a_shell(db):
    out, _ = run("register_server", "time", "--stdio", "mcp-server-time --local-timezone 'UTC'",
                 "--env", "TZ_API_KEY=sk-abcdefghijklmnop", "--timeout", "30")
    server = Server.objects.get(slug="time")
    assert server.command == ["mcp-server-time", "--local-timezone", "UTC"]
    assert server.timeout_seconds == 30 and server.env == {"TZ_API_KEY": "sk-abcdefghijklmnop"}
    assert "sk-abcdefghijklmnop" not in out and "TZ_API_KEY=•••mnop" in out
    assert "/mcp/time/" in out


def test_it_sets_which_questions_a_server_may_ask_and_session_isolation(db):
    run("register_server", "time", "--stdio", "mcp-server-time", "--refuse", "sampling", "--refuse", "roots",
        "--isolate-sessions")
    server = Server.objects.get(slug="time")
    assert server.allowed_client_capabilities() == {"elicitation"} and server.isolate_sessions
    run("register_server", "time", "--stdio", "mcp-server-time", "--update")
    server.refresh_from_db()
    assert server.allowed_client_capabilities() == {"sampling", "elicitation", "roots"}
    assert not server.isolate_sessions


def test_it_registers_http_and_sse_servers_with_masked_headers(db):
    out, _ = run("register_server", "remote", "--http", "http://127.0.0.1:3001/mcp",
                 "--header", "Authorization=Bearer abcdefghijklmnopqrstuvwxyz")
    assert "abcdefghijklmnopqrstuvwxyz" not in out
    run("register_server", "legacy", "--sse", "http://127.0.0.1:3001/sse")
    assert Server.objects.get(slug="remote").headers == {"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz"}
    assert Server.objects.get(slug="legacy").transport == "sse"


@pytest.mark.parametrize(("args", "message"), [
    (["Bad_Slug", "--stdio", "x"], "slug"),
    (["ok", "--http", "ftp://host/x"], "not an http"),
    (["ok", "--http", "http://u:pw@host/mcp"], "credentials in --header"),
    (["ok", "--stdio", "x", "--header", "A=b"], "--header is for"),
    (["ok", "--http", "http://h/mcp", "--env", "A=b"], "--env is for"),
    (["ok", "--stdio", "x", "--env", "novalue"], "NAME=VALUE"),
    (["ok", "--stdio", "'unclosed"], "cannot split"),
    (["ok", "--stdio", "x", "--timeout", "0"], "--timeout"),
], ids=["bad-slug", "bad-scheme", "url-credentials", "header-on-stdio", "env-on-http", "env-no-value",
        "unclosed-quote", "zero-timeout"])
def test_it_refuses_bad_registrations_with_a_clear_error(db, args, message):
    with pytest.raises(CommandError, match=message):
        run("register_server", *args)
    assert not Server.objects.exists()


def test_it_refuses_to_overwrite_a_server_without_update(server):
    with pytest.raises(CommandError, match="--update"):
        run("register_server", "files", "--stdio", "other")
    run("register_server", "files", "--stdio", "other", "--update")
    assert Server.objects.get(slug="files").command == ["other"]


def test_unknown_slugs_fail_with_exit_1_and_the_known_ones(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3"}
    assert manage("migrate", "--noinput", env=env).returncode == 0
    proc = manage("export_policy", "nope", env=env)
    assert proc.returncode == 1
    assert "no server with slug 'nope'" in proc.stderr


@pytest.mark.parametrize(("url", "message"), [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a metadata address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is a metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a metadata address"),
    ("http://169.254.10.10:8080/mcp", "169.254.10.10 is a link-local address"),
    ("http://2130706433/mcp", "legacy form that libraries read differently: write it as 127.0.0.1"),
    ("http://0x7f000001:3001/mcp", "write it as 127.0.0.1"),
], ids=["aws-metadata", "aws-metadata-ipv6", "gcp-metadata-name", "link-local", "integer-host", "hex-host"])
def test_register_server_refuses_a_metadata_link_local_or_numeric_host_url_saying_what_to_do(db, url, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run("register_server", "remote", "--http", url)
    with pytest.raises(CommandError, match="PORTCULLIS_UPSTREAM_ADDRESSES|write it as"):
        run("register_server", "remote", "--sse", url)
    assert not Server.objects.exists()


def test_register_server_allows_loopback_unless_the_setting_leaves_it_out(db, settings):
    run("register_server", "local", "--http", "http://localhost:3001/mcp")
    settings.PORTCULLIS_UPSTREAM_ADDRESSES = ["public", "private"]
    with pytest.raises(CommandError, match=re.escape("localhost (resolves to 127.0.0.1) is a loopback address")):
        run("register_server", "local", "--http", "http://localhost:3002/mcp", "--update")
    assert Server.objects.get(slug="local").url == "http://localhost:3001/mcp"


def test_refresh_tools_refuses_an_upstream_whose_address_is_no_longer_allowed_before_connecting(db, settings):
    run("register_server", "local", "--http", "http://localhost:9/mcp")
    settings.PORTCULLIS_UPSTREAM_ADDRESSES = ["public", "private"]  # or the name now resolves elsewhere
    with pytest.raises(CommandError, match=re.escape("server 'local' was not contacted: localhost (resolves to")):
        run("refresh_tools", "local")
    assert "loopback address" in Server.objects.get(slug="local").last_error


# --- refresh_tools against real servers ---

def test_it_refreshes_the_tools_of_a_real_stdio_server(db):
    exe = str(Path(sys.executable).with_name("mcp-server-time"))
    run("register_server", "time", "--stdio", f"{exe} --local-timezone UTC")
    out, _ = run("refresh_tools", "time")
    names = set(Tool.objects.filter(server__slug="time").values_list("name", flat=True))
    assert names == {"get_current_time", "convert_time"}
    assert "2 new, 0 changed, 0 gone" in out
    assert Server.objects.get(slug="time").health == "ok"
    out, _ = run("refresh_tools", "time")
    assert "0 new, 0 changed, 0 gone, 2 unchanged" in out


def test_it_records_a_failing_upstream_with_redacted_stderr_and_changes_nothing(db):
    script = "import sys; sys.stderr.write('boom: token ghp_" + "a" * 36 + "\\n'); print('not json')"
    run("register_server", "broken", "--stdio", f"{sys.executable} -c \"{script}\"", "--timeout", "10")
    with pytest.raises(CommandError) as info:
        run("refresh_tools", "broken")
    server = Server.objects.get(slug="broken")
    assert server.health == "error"
    assert "boom" in server.last_error and "ghp_" + "a" * 36 not in server.last_error
    assert "ghp_" + "a" * 36 not in str(info.value)
    assert not Tool.objects.filter(server=server).exists()


def test_it_reports_a_missing_executable(db):
    run("register_server", "ghost", "--stdio", "/nonexistent/mcp-server --flag")
    with pytest.raises(CommandError, match="could not list the tools of 'ghost'") as refused:
        run("refresh_tools", "ghost")
    assert "'/nonexistent/mcp-server' was not found on the gateway's host" in str(refused.value)


# --- grants ---

def test_create_grant_prints_the_token_once_with_client_configurations(server, other_server):
    out, _ = run("create_grant", "laptop", "--server", "files", "--server", "other", "--expires", "30d")
    grant = Grant.objects.get(name="laptop")
    token = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("token"))
    assert token.startswith("pcl_") and grant.token_digest not in out
    assert set(grant.servers.values_list("slug", flat=True)) == {"files", "other"}
    assert grant.expires_at is not None
    for needle in ("claude mcp add --transport http files", '"mcpServers"', '"servers"',
                   "npx @modelcontextprotocol/inspector --cli", f"Bearer {token}", "http://127.0.0.1:8000/mcp/other/"):
        assert needle in out


def test_create_grant_refuses_unknown_servers_and_bad_expiry(server):
    with pytest.raises(CommandError, match="no server with slug 'nope'"):
        run("create_grant", "x", "--server", "nope")
    with pytest.raises(CommandError, match="e.g. 90m"):
        run("create_grant", "x", "--server", "files", "--expires", "soon")
    assert not Grant.objects.exists()


def test_revoke_grant_revokes_and_is_idempotent(grant_that_may):
    out, _ = run("revoke_grant", "agent-may")
    assert "revoked grant 'agent-may'" in out
    out, _ = run("revoke_grant", "agent-may")
    assert "already revoked" in out
    with pytest.raises(CommandError, match="no grant named"):
        run("revoke_grant", "nobody")


# --- apply_policy / export_policy / rollback_policy ---

def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return str(path)


def test_apply_then_export_round_trips_exactly(server, tmp_path):
    out, _ = run("apply_policy", "files", write(tmp_path, "p.json", SEED_EXAMPLE))
    assert "activated version v1" in out
    exported, _ = run("export_policy", "files")
    assert json.loads(exported) == SEED_EXAMPLE
    assert exported == canonical_json(SEED_EXAMPLE)
    out, _ = run("apply_policy", "files", write(tmp_path, "again.json", exported))
    assert "unchanged" in out
    assert PolicyVersion.objects.filter(server=server).count() == 1


def test_apply_prints_what_changed_and_keeps_every_version(server, tmp_path):
    run("apply_policy", "files", write(tmp_path, "a.json", SEED_EXAMPLE))
    changed = {**SEED_EXAMPLE, "default": "allow"}
    out, _ = run("apply_policy", "files", write(tmp_path, "b.json", changed))
    assert "default" in out and "activated version v2" in out
    versions = PolicyVersion.objects.filter(server=server).order_by("number")
    assert [(v.number, v.is_active) for v in versions] == [(1, False), (2, True)]
    assert versions[1].summary and versions[1].actor.startswith("cli:apply_policy")


def test_rollback_creates_a_new_version_with_the_old_document(server, tmp_path):
    run("apply_policy", "files", write(tmp_path, "a.json", SEED_EXAMPLE))
    run("apply_policy", "files", write(tmp_path, "b.json", {**SEED_EXAMPLE, "default": "allow"}))
    out, _ = run("rollback_policy", "files", "1")
    assert "activated version v3" in out
    assert PolicyVersion.objects.get(server=server, is_active=True).document == SEED_EXAMPLE
    assert json.loads(run("export_policy", "files", "--policy-version", "2")[0])["default"] == "allow"
    with pytest.raises(CommandError, match="no policy version 9"):
        run("rollback_policy", "files", "9")


BAD_FILES = [
    ('{"version": "1",\n  "default": "deny",\n  "tools": {,}\n}', "line 3 column"),
    ('{"version": "1", "default": "deny", "default": "allow"}', "/default"),
    ({"version": "1", "default": "deny", "tols": {}}, "/tols"),
    ({"version": "1", "default": "deny", "tools": {"x": {"limits": [
        {"counter": "c", "window": "fortnight", "max": 1, "scope": "grant"}]}}}, "/tools/x/limits/0/window"),
    ({"version": "1", "default": "deny", "tools": {"x": {"deny_if": [
        {"path": "args.a", "op": "like", "value": 1}]}}}, "/tools/x/deny_if/0/op"),
    ({"version": "1", "default": "deny", "tools": {"x": {"require": [
        {"path": "args.a", "op": "regex", "value": "("}]}}}, "/tools/x/require/0/value"),
    ({"version": "1", "default": "deny", "tools": {
        "x": {"limits": [{"counter": "c", "window": "minute", "max": 1, "scope": "grant"}]},
        "y": {"limits": [{"counter": "c", "window": "hour", "max": 1, "scope": "grant"}]}}}, "/tools/y/limits/0"),
]


@pytest.mark.parametrize(("content", "where"), BAD_FILES,
                         ids=["syntax", "duplicate-key", "unknown-field", "bad-window", "unknown-op", "bad-regex",
                              "counter-reused-with-other-window"])
def test_a_bad_policy_file_exits_1_naming_the_place_and_applies_nothing(server, tmp_path, content, where):
    path = write(tmp_path, "bad.json", content)
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was applied"):
        call_command("apply_policy", "files", path, stdout=io.StringIO(), stderr=err)
    assert where in err.getvalue()
    assert not PolicyVersion.objects.exists()


def test_apply_policy_exits_1_from_the_shell_for_a_bad_file(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3"}
    assert manage("migrate", "--noinput", env=env).returncode == 0
    assert manage("register_server", "files", "--stdio", "x", env=env).returncode == 0
    proc = manage("apply_policy", "files", write(tmp_path, "p.json", {"version": "2"}), env=env)
    assert proc.returncode == 1
    assert "/version" in proc.stderr and "/default" in proc.stderr and "Traceback" not in proc.stderr


def test_apply_policy_warns_about_rules_naming_unknown_tools(server, tmp_path):
    Tool.objects.create(server=server, name="dataset_list", definition_hash="h", risk_category="read",
                        risk_level="low")
    _, err = run("apply_policy", "files", write(tmp_path, "p.json", SEED_EXAMPLE))
    assert "'cloud_backup_run' is not a tool of files" in err


def test_a_grant_can_have_its_own_policy_version_line(server, grant_that_may, tmp_path):
    run("apply_policy", "files", write(tmp_path, "s.json", SEED_EXAMPLE))
    own = {**SEED_EXAMPLE, "default": "allow"}  # the grant's rules: the server's policy, with another default
    out, _ = run("apply_policy", "files", write(tmp_path, "g.json", own), "--grant", "agent-may")
    assert "activated version v1" in out
    assert policies.active_version(server, grant_that_may.grant).layer == {"default": "allow"}
    assert json.loads(run("export_policy", "files", "--grant", "agent-may")[0]) == own
    assert policies.applicable(server, grant_that_may.grant).document == own
    assert policies.applicable(server, None).document == SEED_EXAMPLE
    with pytest.raises(CommandError, match="nothing was applied"):  # a grant's rules never remove the server's
        run("apply_policy", "files", write(tmp_path, "h.json", {"version": "1", "default": "allow"}),
            "--grant", "agent-may")
    assert policies.active_version(server, grant_that_may.grant).number == 1
