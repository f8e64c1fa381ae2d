"""A held call that outlives the client's patience (issue 16): a stateless-era agent — the Python SDK's Client with a
tasks extension (`io.modelcontextprotocol/tasks`, declared per request) — calls a tool that needs approval and gets a
task handle at once; it polls `tasks/get` while a person approves in chromium, long after the request ended, and
receives the real result. The upstream ran the call once, it was counted once, and the audit row names the
approver. A task nobody approves ends `cancelled` with the reason; a task is bound to its grant."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Literal

import httpx2
import pytest
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, Request, RequestParams, Result
from pydantic import ConfigDict, Field

from gateway.grants import create_grant
from gateway.models import Approval, Call, CallTask, Server
from tests.browser.test_approval_e2e import prepare_truenas, sign_in
from tests.conftest import start_gateway, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOLD_S = 3  # an agent without tasks would be sent away after 3 s; the task waits for the approval
POLICY = {"version": "1", "default": "deny", "resources": {"truenas://debug/*": {}},
          "tools": {"dataset_create": {"action": "approve"}, "pool_list": {}}}


# --- the agent's side of the tasks extension, on the SDK's extension interface ---

class TaskParams(RequestParams):
    task_id: str = Field(alias="taskId")


class GetTask(Request[TaskParams, Literal["tasks/get"]]):
    name_param = "taskId"


class TaskState(Result):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    result_type: str | None = Field(alias="resultType", default=None)
    task_id: str = Field(alias="taskId")
    status: str
    status_message: str | None = Field(alias="statusMessage", default=None)
    poll_interval_ms: int | None = Field(alias="pollIntervalMs", default=None)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class CreatedTask(Result):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")
    status: str
    poll_interval_ms: int | None = Field(alias="pollIntervalMs", default=None)


class Tasks(ClientExtension):
    """Follows a task handle by polling tasks/get until it ends; records what it saw."""

    identifier = "io.modelcontextprotocol/tasks"

    def __init__(self) -> None:
        self.created: list[CreatedTask] = []
        self.polls: list[TaskState] = []

    def claims(self):
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=self.follow)]

    async def follow(self, created: CreatedTask, ctx: ClaimContext) -> CallToolResult:
        self.created.append(created)
        while True:
            await asyncio.sleep(min(created.poll_interval_ms or 1000, 500) / 1000)
            state = await ctx.session.send_request(
                GetTask(method="tasks/get", params=TaskParams(taskId=created.task_id)), TaskState)
            self.polls.append(state)
            if state.status == "completed":
                return CallToolResult.model_validate(state.result)
            if state.status in ("cancelled", "failed"):
                return CallToolResult(content=[{"type": "text", "text": state.status_message or state.status}],
                                      is_error=True)


@pytest.fixture
def gateway(tmp_path):
    running = start_gateway(tmp_path, {"PORTCULLIS_APPROVAL_HOLD_S": str(HOLD_S), "PORTCULLIS_APPROVAL_TTL_S": "60"})
    yield running
    stop(running.proc)


@pytest.fixture
def token(gateway, worker, django_user_model):
    return prepare_truenas(worker, django_user_model, POLICY)


def agent(gateway, token: str, tasks: Tasks, box: list) -> threading.Thread:
    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(gateway.url("truenas"), http_client=http), mode="auto", cache=None,
                          extensions=[tasks]) as c:
            assert c.protocol_version == "2026-07-28"
            result = await c.call_tool("dataset_create", {"name": "tank/by-task"})
            report = await c.read_resource("truenas://debug/calls")
            return result, json.loads(report.contents[0].text)["counts"]

    thread = threading.Thread(target=lambda: box.append(asyncio.run(asyncio.wait_for(go(), 90))))
    thread.start()
    return thread


def test_a_held_call_becomes_a_task_the_agent_polls_until_a_person_approves(gateway, token, page, shoot, worker):
    sign_in(page, gateway.base)
    tasks, box = Tasks(), []
    thread = agent(gateway, token, tasks, box)
    card = "#approvals-pending article.approval"
    page.wait_for_selector(card, timeout=30_000)
    page.wait_for_timeout((HOLD_S + 2) * 1000)  # longer than an agent without tasks would have been held
    assert tasks.created and tasks.polls and all(p.status == "working" for p in tasks.polls)
    assert thread.is_alive() and not box
    shoot(page, "16-task-01-held-while-the-agent-polls")
    page.click(f"{card} button[value=approve]")
    thread.join(60)
    result, counts = box[0]
    assert not result.is_error and "tank/by-task" in result.content[0].text
    assert counts.get("dataset_create") == 1  # the upstream ran it once
    assert tasks.polls[-1].status == "completed" and tasks.polls[-1].status_message.startswith("approved by operator")

    def rows():
        call = Call.objects.get(tool_name="dataset_create")
        task = CallTask.objects.get()
        return call, task, Approval.objects.get()

    call, task, approval = worker.submit(rows).result(timeout=10)
    assert call.outcome == "ok" and call.reason == f"approved by operator (approval {approval.public_id})"
    assert task.id == tasks.created[0].task_id and task.call_id == call.pk and task.status == "completed"
    assert approval.state == "used"


def test_a_task_nobody_approves_ends_cancelled_with_the_reason_and_is_bound_to_its_grant(gateway, token, worker,
                                                                                         settings):
    tasks, box = Tasks(), []

    def expire_soon():
        Approval.objects.update(expires_at=Approval.objects.get().created_at + __import__("datetime").timedelta(
            seconds=4))

    thread = agent(gateway, token, tasks, box)
    while not tasks.created and thread.is_alive():
        thread.join(0.1)
    # Another grant cannot see the task.
    other = worker.submit(lambda: create_grant("other", [Server.objects.get(slug="truenas")], None).token).result(10)
    body = {"jsonrpc": "2.0", "id": 5, "method": "tasks/get", "params": {"taskId": tasks.created[0].task_id, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}}}
    answer = httpx2.post(gateway.url("truenas"), json=body, timeout=10, headers={
        "Authorization": f"Bearer {other}", "Accept": "application/json, text/event-stream",
        "Mcp-Method": "tasks/get", "Mcp-Name": tasks.created[0].task_id, "MCP-Protocol-Version": "2026-07-28"})
    assert "no task" in answer.json()["error"]["message"]
    worker.submit(expire_soon).result(timeout=10)
    thread.join(60)
    result, counts = box[0]
    assert result.is_error and "nobody approved" in result.content[0].text
    assert counts.get("dataset_create", 0) == 0
    call = worker.submit(lambda: Call.objects.get(tool_name="dataset_create")).result(timeout=10)
    assert call.outcome == "refused"
