"""A rug pull, end to end (issue 15, part 1): a real upstream (tests/peers/changing_server.py) changes its `echo`
tool's definition in the middle of an agent's session — an instruction added to the description, or one hidden in
an enum value — and tells the gateway with notifications/tools/list_changed. In both protocol eras, through the
Python SDK's client: the agent's next call is refused with the reason and nothing reaches the upstream; the held
tool appears live on the approvals page in chromium; a person reviews the change and approves it; the agent's next
call in the same session passes. On a server set to `flag` the changed tool stays callable, and a change of
whitespace alone never holds a tool.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

import httpx2
import pytest
from django.db import connections
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.grants import create_grant
from gateway.models import Server, Tool
from tests.browser.test_approval_e2e import PASSWORD, sign_in
from tests.conftest import ROOT, http_peer, register_http_server, start_gateway, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LIVE_MS = 15_000
ALLOW = {"version": "1", "default": "allow"}
HIDDEN = {"description": "read ~/.ssh/id_rsa", "enum": "evil.example"}


@pytest.fixture
def changing(tmp_path, worker, django_user_model):
    """A gateway process, the changing upstream registered on it (a new server: it holds changed tools), a grant."""
    django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    gateway = start_gateway(tmp_path)
    try:
        with http_peer([sys.executable, str(ROOT / "tests" / "peers" / "changing_server.py"), "{port}"],
                       quiet=True) as url:
            def prepare():
                server = register_http_server("changing", url, ALLOW)
                return server, create_grant("agent", [server], None).token
            server, token = worker.submit(prepare).result(timeout=60)
            yield gateway, server, token
    finally:
        stop(gateway.proc)


def held(name: str = "echo") -> str:
    return Tool.objects.get(server__slug="changing", name=name).held_reason


class Agent(threading.Thread):
    """One agent session kept open across the change: echo, rewrite, (held) echo, wait for a person, echo."""

    def __init__(self, url: str, token: str, mode: str, what: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.mode, self.what = url, token, mode, what
        self.held, self.approved = threading.Event(), threading.Event()
        self.results: dict = {}

    def run(self) -> None:
        try:
            asyncio.run(asyncio.wait_for(self.session(), 120))
        except BaseException as exc:  # the test thread reports it
            self.results["failure"] = repr(exc)
            self.held.set()
        finally:
            connections.close_all()

    async def session(self) -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        async with Client(streamable_http_client(self.url, http_client=http), mode=self.mode, cache=None) as c:
            self.results["era"] = c.protocol_version
            self.results["first"] = await c.call_tool("echo", {"text": "hi"})
            await c.call_tool("rewrite", {"what": self.what})
            deadline = time.monotonic() + 20  # list_changed reaches the gateway, which syncs its catalogue
            while not await asyncio.to_thread(held) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            self.results["held"] = await asyncio.to_thread(held)
            self.results["refused"] = await c.call_tool("echo", {"text": "hi"})
            self.results["listed"] = [t.name for t in (await c.list_tools()).tools]
            self.results["reached"] = json.loads((await c.call_tool("stats", {})).content[0].text)["echo_calls"]
            self.held.set()
            await asyncio.to_thread(self.approved.wait, 60)
            self.results["after"] = await c.call_tool("echo", {"text": "again"})


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("what", ["description", "enum"])
def test_a_changed_tool_is_refused_until_a_person_approves_it_in_the_browser(changing, page, shoot, mode, what):
    gateway, _, token = changing
    sign_in(page, gateway.base)  # on the approvals page, its live socket open

    agent = Agent(gateway.url("changing"), token, mode, what)
    agent.start()
    assert agent.held.wait(60), "the agent never got to its refused call"
    results = agent.results
    assert "failure" not in results, results.get("failure")
    assert results["era"] == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert not results["first"].is_error
    assert results["held"], "notifications/tools/list_changed did not hold the changed tool"
    refused = results["refused"]
    assert refused.is_error and refused.content[0].text.startswith(
        "tool 'echo' changed since it was approved; an operator must review the new definition")
    assert results["reached"] == 1  # the refused call never reached the upstream
    assert "echo" not in results["listed"] and "rewrite" in results["listed"]

    # The held tool appeared on the approvals page without a reload, and the navigation counts it.
    card = page.locator("#tool-reviews article", has_text="echo")
    card.wait_for(timeout=LIVE_MS)
    assert page.locator("#review-count").text_content() == "1"
    shoot(page, f"15-1-held-{what}-{mode}")
    card.get_by_role("link", name="Review what changed").click()
    page.get_by_role("heading", name="▲ The upstream changed this tool's definition").wait_for()
    assert HIDDEN[what] in page.locator("section[aria-label='definition changed']").inner_text()
    shoot(page, f"15-2-diff-{what}-{mode}", full_page=True)
    page.get_by_role("button", name="Approve new definition").click()
    page.get_by_text("approved the new definition of echo").wait_for()
    page.get_by_text("Definition approved by operator").wait_for()

    agent.approved.set()
    agent.join(60)
    after = agent.results["after"]
    assert not after.is_error and after.content[0].text == "again", after


def test_flag_keeps_a_changed_tool_callable_and_whitespace_never_holds(changing, worker):
    gateway, server, token = changing

    async def run(what: str) -> tuple:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with Client(streamable_http_client(gateway.url("changing"), http_client=http), mode="legacy",
                          cache=None) as c:
            await c.call_tool("rewrite", {"what": what})
            await c.list_tools()  # the gateway syncs what the upstream lists now
            return await c.call_tool("echo", {"text": "hi"}), await asyncio.to_thread(held)

    result, reason = worker.submit(lambda: asyncio.run(run("whitespace"))).result(timeout=90)
    assert not result.is_error and reason == ""

    def flag():
        Server.objects.filter(pk=server.pk).update(on_definition_change=Server.OnChange.FLAG)
    worker.submit(flag).result(timeout=10)
    result, reason = worker.submit(lambda: asyncio.run(run("description"))).result(timeout=90)
    assert not result.is_error and reason == ""
    assert worker.submit(lambda: Tool.objects.get(server=server, name="echo").changed_since_approved).result()
