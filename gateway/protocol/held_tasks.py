"""Held calls as tasks (the `io.modelcontextprotocol/tasks` extension, protocol 2026-07-28): a stateless-era agent
that declares the extension on its tools/call gets a task handle at once when the call is held for a person's
approval, instead of a request held open until the client gives up (~60 s). The gateway owns the call: it waits
for the decision up to the approval's expiry, then runs the call (released exactly as a held call is: counters
reserved, the approval taken once, the audit row settled) and keeps the outcome for the agent's `tasks/get`.

- The task is bound to the grant that made the call and to the server: another grant's `tasks/get` finds no task.
- Approved: the upstream's result, status `completed` (a tool error too: it is a result). Denied: `completed` with
  the gateway's refusal as an `isError` result, as the agent would have got it in the request. Nobody decided
  before the approval expired, or the agent sent `tasks/cancel`: `cancelled`, with the reason. A JSON-RPC error
  from the upstream: `failed` with it.
- The task row is written before the handle is returned (a `tasks/get` on any gateway process finds it). The call
  itself waits in the process that admitted it; if that process stops, peers mark its tasks cancelled (its calls
  are settled `interrupted`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from datetime import datetime

from django.utils import timezone
from mcp_types import CLIENT_CAPABILITIES_META_KEY

from gateway import calls
from gateway.calls import approvals, audit, dbthreads, ratelimit
from gateway.models import CallTask, Server
from gateway.protocol import jsonrpc
from gateway.protocol.exchange import Reply, Request
from gateway.protocol.jsonrpc import RpcError

log = logging.getLogger("portcullis.tasks")

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
POLL_MS = 2000
METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
_running: dict[str, asyncio.Task] = {}  # this process's held calls followed as tasks


def declared(params: dict) -> bool:
    """Did this request's own capabilities declare the tasks extension?"""
    meta = params.get("_meta")
    caps = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
    extensions = caps.get("extensions") if isinstance(caps, dict) else None
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def _stamp(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def shape(task: CallTask) -> dict:
    out = {"taskId": task.id, "status": task.status, "createdAt": _stamp(task.created_at),
           "lastUpdatedAt": _stamp(task.updated_at),
           "ttlMs": max(0, int((task.expires_at - task.created_at).total_seconds() * 1000)),
           "pollIntervalMs": POLL_MS}
    if task.status_message:
        out["statusMessage"] = task.status_message
    if task.status == CallTask.Status.COMPLETED and task.result is not None:
        out["result"] = task.result
    if task.status == CallTask.Status.FAILED and task.error is not None:
        out["error"] = task.error
    return out


def _create(grant_id: int, server_id: int, call_id: int | None, approval, now: datetime) -> CallTask:
    return CallTask.objects.create(
        id=secrets.token_urlsafe(24), grant_id=grant_id, server_id=server_id, call_id=call_id,
        approval_id=approval.pk, worker=audit.WORKER_ID, created_at=now, updated_at=now,
        expires_at=approval.expires_at,
        status_message=f"waiting for a person to approve (approval {approval.public_id}); poll tasks/get")


def _finish(task_id: str, status: str, message: str = "", result: dict | None = None,
            error: dict | None = None) -> None:
    CallTask.objects.filter(id=task_id, status=CallTask.Status.WORKING).update(
        status=status, status_message=message[:2000], result=result, error=error, updated_at=timezone.now())


def _status(task_id: str) -> str:
    return CallTask.objects.filter(id=task_id).values_list("status", flat=True).first() or ""


async def start(req: Request, msg: jsonrpc.Message, server: Server, link, admission: calls.Admission,
                name: str, arguments: dict) -> Reply:
    """The held call becomes a task this process follows; the agent gets the handle now."""
    task = await dbthreads.run(_create, admission.grant_id, server.pk, admission.call_id, admission.held,
                               timezone.now())
    follower = asyncio.create_task(_follow(task.id, req, msg, server, link, admission, name, arguments),
                                   name=f"portcullis:task:{task.id[:8]}")
    _running[task.id] = follower
    follower.add_done_callback(lambda _: _running.pop(task.id, None))
    return Reply(200, jsonrpc.result(msg.id, {"resultType": "task", **shape(task)}))


async def _follow(task_id: str, req: Request, msg: jsonrpc.Message, server: Server, link,
                  admission: calls.Admission, name: str, arguments: dict) -> None:
    from gateway.protocol.forwarded_call import ForwardedCall
    from gateway.protocol.holding import NOT_DECIDED, hold
    from gateway.protocol.tools_call import Era, _forward, _Timing

    quiet = replace(req, channel=None)  # nobody listens to the request's stream any more
    approval = admission.held
    try:
        window = max(1.0, (approval.expires_at - timezone.now()).total_seconds())
        admission = await hold(quiet, msg, admission, window_s=window)
        if not admission.forward:
            text = admission.message
            if admission.refusal == NOT_DECIDED:
                await dbthreads.run(_finish, task_id, CallTask.Status.CANCELLED,
                                    f"expired: nobody approved approval {approval.public_id} before it expired; "
                                    "call the tool again to ask again")
            else:
                await dbthreads.run(_finish, task_id, CallTask.Status.COMPLETED, text,
                                    {"content": [{"type": "text", "text": text}], "isError": True})
            return
        if await dbthreads.run(_status, task_id) != CallTask.Status.WORKING:  # cancelled by the agent meanwhile
            await dbthreads.run(_cancelled_after_approval, admission)
            return
        call = ForwardedCall(admission, server, msg, Era.STATELESS)
        reply = await _forward(quiet, msg, link, call, None, name, arguments, _Timing())
        body = reply.body or {}
        if isinstance(body.get("result"), dict):
            result = {k: v for k, v in body["result"].items() if k != "resultType"}
            await dbthreads.run(_finish, task_id, CallTask.Status.COMPLETED,
                                f"approved by {await dbthreads.run(_approvers, approval.pk)}; the call ran", result)
        else:
            await dbthreads.run(_finish, task_id, CallTask.Status.FAILED, "the upstream answered with an error",
                                None, body.get("error") or {"code": jsonrpc.INTERNAL_ERROR, "message": "no answer"})
    except asyncio.CancelledError:
        await asyncio.shield(dbthreads.run(_cancelled_while_held, task_id, admission))
        raise
    except Exception:  # noqa: BLE001 - the task says what happened; the call's row is settled by its own code
        log.exception("task %s failed", task_id[:8])
        await dbthreads.run(_finish, task_id, CallTask.Status.FAILED, "the gateway could not finish the call", None,
                            {"code": jsonrpc.INTERNAL_ERROR, "message": "the gateway could not finish the call"})


def _cancelled_after_approval(admission: calls.Admission) -> None:
    """Released (counters reserved, approval taken) but the agent cancelled the task first: nothing runs, so the
    counters are given back and the row says why."""
    ratelimit.release(admission.reservations)
    calls.refuse_held(admission, "approval", "cancelled by the agent (tasks/cancel) before it ran", timezone.now())


def _approvers(approval_id: int) -> str:
    return approvals.approved_text(approval_id).removeprefix("approved by ")


def _cancelled_while_held(task_id: str, admission: calls.Admission) -> None:
    if admission.held is not None and not admission.forward:
        calls.refuse_held(admission, "approval", "cancelled by the agent (tasks/cancel)", timezone.now())
        approvals.void(admission.held, "the agent cancelled the task", timezone.now())
    _finish(task_id, CallTask.Status.CANCELLED, "cancelled by the agent (tasks/cancel)")


# --- the agent's tasks/* requests ---

def _load(grant_id: int, server: Server, params: dict) -> CallTask:
    task_id = params.get("taskId") if isinstance(params, dict) else None
    if not isinstance(task_id, str) or not task_id:
        raise RpcError(jsonrpc.INVALID_PARAMS, "tasks/* needs params.taskId (a string)")
    task = CallTask.objects.filter(id=task_id, grant_id=grant_id, server=server).first()
    if task is None:
        raise RpcError(jsonrpc.INVALID_PARAMS, f"no task {task_id!r} of this grant on this server")
    if task.status == CallTask.Status.WORKING and task.expires_at <= timezone.now():
        _finish(task.id, CallTask.Status.CANCELLED, "expired: nobody approved the call in time; call the tool "
                                                    "again to ask again")
        task.refresh_from_db()
    return task


def _cancel(grant_id: int, server: Server, params: dict) -> CallTask:
    task = _load(grant_id, server, params)
    if task.status == CallTask.Status.WORKING:
        _finish(task.id, CallTask.Status.CANCELLED, "cancelled by the agent (tasks/cancel)")
        if task.approval_id is not None:
            from gateway.models import Approval

            approval = Approval.objects.filter(pk=task.approval_id).first()
            if approval is not None:
                approvals.void(approval, "the agent cancelled the task", timezone.now())
        task.refresh_from_db()
    return task


async def handle(msg: jsonrpc.Message, server: Server, grant_id: int) -> Reply:
    if msg.method == "tasks/get":
        task = await dbthreads.run(_load, grant_id, server, msg.params)
        return Reply(200, jsonrpc.result(msg.id, {"resultType": "complete", **shape(task)}))
    if msg.method == "tasks/cancel":
        task = await dbthreads.run(_cancel, grant_id, server, msg.params)
        local = _running.get(task.id)
        if local is not None:
            local.cancel()
        return Reply(200, jsonrpc.result(msg.id, {"resultType": "complete"}))
    await dbthreads.run(_load, grant_id, server, msg.params)
    raise RpcError(jsonrpc.INVALID_PARAMS, "this task needs no input (it waits for a person's approval): poll "
                                           "tasks/get")


def cancel_tasks_of(processes: list[str], now: datetime) -> int:
    """Tasks whose calls waited in processes that stopped (called by the peers that settle their calls)."""
    return CallTask.objects.filter(worker__in=processes, status=CallTask.Status.WORKING).update(
        status=CallTask.Status.CANCELLED, updated_at=now,
        status_message="the gateway process holding the call stopped; call the tool again")
