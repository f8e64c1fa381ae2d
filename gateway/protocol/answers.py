"""Server→client requests relayed to a session-era agent, and the agent's answers, on any gateway process.

The process whose upstream asked waits for the answer; the agent POSTs it wherever the balancer sends it. The id
the gateway gives a relayed request names the asking process (`portcullis-<random>.<process key>`): a process that
gets an answer it is not waiting for passes it, over the channel layer (Redis across processes), to that
process's group, where it is delivered if it belongs to the same session. A process key is 16 hex digits, so an
agent cannot address anything but a gateway process's answer group.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets

from channels.layers import get_channel_layer

log = logging.getLogger("portcullis.answers")

PROCESS_KEY = secrets.token_hex(8)
_KEY_IN_ID = re.compile(r"^portcullis-[A-Za-z0-9_-]{12}\.([0-9a-f]{16})$")
# ask id → (session id, the future the asking request waits on)
_WAITING: dict[str, tuple[str, asyncio.Future]] = {}
_listener: asyncio.Task | None = None


def group_of(key: str) -> str:
    return f"portcullis.answers.{key}"


def new_question(session_id: str) -> tuple[str, asyncio.Future]:
    """An id for a relayed request of this session and the future its answer resolves."""
    _ensure_listener()
    ask_id = f"portcullis-{secrets.token_urlsafe(9)}.{PROCESS_KEY}"
    future = asyncio.get_running_loop().create_future()
    _WAITING[ask_id] = (session_id, future)
    return ask_id, future


def forget(ask_id: str) -> None:
    _WAITING.pop(ask_id, None)


def cancel_session(session_id: str) -> None:
    """The session ended here: whatever its upstream still waits for will not come."""
    for ask_id, (owner, future) in list(_WAITING.items()):
        if owner == session_id:
            future.cancel()
            _WAITING.pop(ask_id, None)


def _deliver_here(ask_id: object, session_id: str, raw: dict) -> bool:
    waiting = _WAITING.get(ask_id) if isinstance(ask_id, str) else None
    if waiting is None or waiting[0] != session_id or waiting[1].done():
        return False
    waiting[1].set_result(raw)
    return True


async def deliver(ask_id: object, session_id: str, raw: dict) -> None:
    """The agent's answer (a JSON-RPC response) to a relayed request: resolved here, or passed to the process that
    asked. An answer nobody waits for is dropped, as a stray response is."""
    if _deliver_here(ask_id, session_id, raw) or not isinstance(ask_id, str):
        return
    match = _KEY_IN_ID.match(ask_id)
    if match is None or match.group(1) == PROCESS_KEY:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group_of(match.group(1)), {"type": "agent.answer", "ask_id": ask_id,
                                                          "session_id": session_id, "body": raw})
    except Exception as exc:  # the asking process times out its request, as for an answer that never came
        log.warning("an agent's answer could not be passed to the process that asked: %s", exc)


def _ensure_listener() -> None:
    global _listener
    if _listener is None or _listener.done():
        _listener = asyncio.create_task(_listen(), name="portcullis:answers")


async def _listen() -> None:
    """Answers other processes got for this one's questions."""
    layer = get_channel_layer()
    if layer is None:
        return
    channel = await layer.new_channel("portcullis.answers.")
    await layer.group_add(group_of(PROCESS_KEY), channel)
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis went away: try again shortly, the group membership is renewed
            log.warning("answers listener: %s", exc)
            await asyncio.sleep(1)
            try:
                await layer.group_add(group_of(PROCESS_KEY), channel)
            except Exception:  # noqa: BLE001, S110 - retried on the next round
                pass
            continue
        if message.get("type") == "agent.answer" and isinstance(message.get("body"), dict):
            _deliver_here(message.get("ask_id"), str(message.get("session_id")), message["body"])


def warm() -> None:
    """Start listening before the first question (a process that asks must already hear the answers)."""
    _ensure_listener()
