"""Real upstream peers through the gateway: server-everything over stdio, Streamable HTTP and SSE; mcp-server-time;
mcp-server-git with argument constraints. Each result is compared with calling the upstream directly."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from django.core.management import call_command
from mcp import Client, types
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Server
from tests.conftest import ROOT, free_port, stop, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EVERYTHING = ROOT / "node_modules" / ".bin" / "mcp-server-everything"
BIN = Path(sys.executable).parent


def require(path: Path) -> str:
    if not path.exists():  # fail loudly: `make test` installs the npm and PyPI peers
        raise AssertionError(f"{path} is missing: run `make test` (it installs the test peers)")
    return str(path)


@pytest.fixture(scope="module")
def everything_http():
    port = free_port()
    proc = subprocess.Popen([require(EVERYTHING), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


@pytest.fixture(scope="module")
def everything_sse():
    port = free_port()
    proc = subprocess.Popen([require(EVERYTHING), "sse"], env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}/sse"
    stop(proc)


def register(slug, policy, **fields) -> str:
    server = Server.objects.create(slug=slug, name=slug, **fields)
    call_command("refresh_tools", slug, stdout=io.StringIO())
    policies.apply(server, policy, actor="test")
    return create_grant(f"agent-{slug}", [server], None).token


def via(gateway, slug, token, **kwargs):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Client(streamable_http_client(gateway.url(slug), http_client=http), mode="legacy", cache=None, **kwargs)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def sampling(ctx, params):
    return types.CreateMessageResult(role="assistant", model="agent-model",
                                     content=types.TextContent(type="text", text="sampled-by-the-agent"))


EVERYTHING_POLICY = {"version": "1", "default": "deny",
                     "tools": {"echo": {}, "get-sum": {}, "trigger-long-running-operation": {},
                               "trigger-sampling-request": {}},
                     "resources": {"demo://resource/static/*": {}}, "prompts": {"simple-prompt": {}}}


@pytest.fixture(params=["stdio", "http", "sse"])
def everything(request, gateway):
    if request.param == "stdio":
        fields = {"transport": "stdio", "command": [require(EVERYTHING)]}
        direct = Client(StdioServerParameters(command=str(EVERYTHING)), mode="legacy")
    elif request.param == "http":
        url = request.getfixturevalue("everything_http")
        fields, direct = {"transport": "http", "url": url}, Client(url, mode="legacy")
    else:
        url = request.getfixturevalue("everything_sse")
        fields, direct = {"transport": "sse", "url": url}, Client(sse_client(url), mode="legacy")
    return register(f"ev-{request.param}", EVERYTHING_POLICY, **fields), f"ev-{request.param}", direct


def test_server_everything_works_through_the_gateway_on_every_upstream_transport(gateway, everything):
    token, slug, direct = everything

    async def go():
        async with via(gateway, slug, token, sampling_callback=sampling) as c, direct as d:
            names = [t.name for t in (await c.list_tools()).tools]
            echo_via = await c.call_tool("echo", {"message": "hello"})
            echo_direct = await d.call_tool("echo", {"message": "hello"})
            denied = await c.call_tool("get-env", {})
            progress: list[float] = []

            async def on_progress(p, total, message):
                progress.append(p)

            long = await c.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 2},
                                     progress_callback=on_progress)
            sampled = await c.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 5})
            resources = (await c.list_resources()).resources
            read = await c.read_resource(resources[0].uri)
            prompt = await c.get_prompt("simple-prompt")
            return names, echo_via, echo_direct, denied, progress, long, sampled, read, prompt

    names, echo_via, echo_direct, denied, progress, long, sampled, read, prompt = run(go())
    assert set(names) == {"echo", "get-sum", "trigger-long-running-operation", "trigger-sampling-request"}
    assert echo_via.content == echo_direct.content and not echo_via.is_error
    assert denied.is_error and denied.content[0].text.startswith("denied by policy")
    assert progress == [1.0, 2.0] and not long.is_error
    assert "sampled-by-the-agent" in sampled.content[0].text
    assert read.contents and prompt.messages
    assert Call.objects.filter(server_slug=slug, outcome="ok").count() == 3 + 2  # 3 tool calls, a read, a prompt
    assert Call.objects.filter(server_slug=slug, outcome="ok", tool_name__contains="/").count() == 2
    assert Call.objects.get(server_slug=slug, tool_name="get-env").outcome == "refused"


def test_mcp_server_time_answers_identically_through_the_gateway_in_both_eras(gateway):
    exe = require(BIN / "mcp-server-time")
    token = register("time", {"version": "1", "default": "deny", "tools": {"convert_time": {}}},
                     transport="stdio", command=[exe, "--local-timezone", "UTC"])
    args = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}

    async def go(mode):
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        client = Client(streamable_http_client(gateway.url("time"), http_client=http), mode=mode, cache=None)
        direct = Client(StdioServerParameters(command=exe, args=["--local-timezone", "UTC"]), mode=mode)
        async with client as c, direct as d:
            names = [t.name for t in (await c.list_tools()).tools]
            return names, await c.call_tool("convert_time", args), await d.call_tool("convert_time", args)

    for mode in ("legacy", "auto"):
        names, through, straight = run(go(mode))
        assert names == ["convert_time"]
        assert through.content == straight.content and through.structured_content == straight.structured_content


def test_mcp_server_git_is_held_to_one_repository_and_feature_branches(gateway, tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(repo), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t",
                    "commit", "-qm", "first"], check=True)
    pin = {"repo_path": {"const": str(repo)}}
    policy = {"version": "1", "default": "deny", "tools": {
        "git_status": {"arguments": {"properties": pin}},
        "git_log": {"arguments": {"properties": pin}},
        "git_create_branch": {"arguments": {"properties": {**pin, "branch_name": {"pattern": "^feature/"}}}},
    }, "risk": {"destructive": {"action": "deny", "on_deny": "history rewrites need a person"}}}
    token = register("git", policy, transport="stdio", command=[require(BIN / "mcp-server-git"), "-r", str(repo)])

    async def go():
        async with via(gateway, "git", token) as c:
            return (await c.call_tool("git_status", {"repo_path": str(repo)}),
                    await c.call_tool("git_status", {"repo_path": str(ROOT)}),
                    await c.call_tool("git_create_branch", {"repo_path": str(repo), "branch_name": "main2"}),
                    await c.call_tool("git_create_branch", {"repo_path": str(repo), "branch_name": "feature/x"}),
                    await c.call_tool("git_reset", {"repo_path": str(repo)}))

    status, elsewhere, bad_branch, good_branch, reset = run(go())
    assert not status.is_error and "main" in status.content[0].text
    assert elsewhere.is_error and "repo_path" in elsewhere.content[0].text
    assert bad_branch.is_error and "must match ^feature/" in bad_branch.content[0].text
    assert not good_branch.is_error
    assert reset.is_error and "history rewrites need a person" in reset.content[0].text
    branches = subprocess.run(["git", "-C", str(repo), "branch"], capture_output=True, text=True).stdout
    assert "feature/x" in branches and "main2" not in branches


def test_tools_offered_only_to_capable_agents_stay_callable_after_a_less_capable_agent_lists(gateway):
    """server-everything lists trigger-sampling-request only to clients that can sample. The refresh sees it (it
    declares every capability), and a listing by an agent that cannot sample is no evidence that it is gone."""
    token = register("ev-caps", EVERYTHING_POLICY, transport="stdio", command=[require(EVERYTHING)])
    server = Server.objects.get(slug="ev-caps")
    assert server.tools.filter(name="trigger-sampling-request", gone_at__isnull=True).exists()

    async def go():
        async with via(gateway, "ev-caps", token) as plain:
            plain_names = {t.name for t in (await plain.list_tools()).tools}
        async with via(gateway, "ev-caps", token, sampling_callback=sampling) as capable:
            sampled = await capable.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 5})
        return plain_names, sampled

    plain_names, sampled = run(go())
    assert "trigger-sampling-request" not in plain_names and "echo" in plain_names
    assert not sampled.is_error and "sampled-by-the-agent" in sampled.content[0].text
    assert server.tools.filter(name="trigger-sampling-request", gone_at__isnull=True).exists()


def test_a_stateless_agent_answers_server_everythings_elicitation_through_the_gateway(gateway):
    """server-everything speaks only the session era and asks mid-call; a 2026-07-28 agent that can elicit
    sees its elicitation tool listed and answers the question as an input_required round."""
    policy = {"version": "1", "default": "deny", "tools": {"echo": {}, "trigger-elicitation-request": {}}}
    token = register("ev-stateless", policy, transport="stdio", command=[require(EVERYTHING)])
    asked: list[str] = []

    async def on_elicit(ctx, params):
        asked.append(params.message)
        schema = params.requested_schema.get("properties", {}) if params.requested_schema else {}
        content = {}
        for name, spec in schema.items():
            kind = spec.get("type")
            if "enum" in spec:
                content[name] = spec["enum"][0]
            elif kind == "boolean":
                content[name] = True
            elif kind in ("integer", "number"):
                content[name] = spec.get("minimum", 1)
            elif kind == "string" and spec.get("format") == "email":
                content[name] = "agent@example.com"
            elif kind == "string" and spec.get("format") == "date":
                content[name] = "2026-11-25"
            elif kind == "string" and spec.get("format") in ("uri", "url"):
                content[name] = "https://example.com"
            elif kind == "string":
                content[name] = "portcullis-agent"
        return types.ElicitResult(action="accept", content=content)

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with Client(streamable_http_client(gateway.url("ev-stateless"), http_client=http), cache=None,
                          elicitation_callback=on_elicit) as agent:
            version = agent.protocol_version
            names = {t.name for t in (await agent.list_tools()).tools}
            result = await agent.call_tool("trigger-elicitation-request", {})
            return version, names, result

    version, names, result = run(go())
    assert version == "2026-07-28"
    assert names == {"echo", "trigger-elicitation-request"}
    assert asked, "the agent was never asked"
    assert not result.is_error, result.content
    text = " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")
    assert "accept" in text.lower()
    first = Call.objects.filter(server_slug="ev-stateless", tool_name="trigger-elicitation-request").order_by("id")
    assert first[0].outcome == "ok"
