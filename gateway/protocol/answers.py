"""Server→client requests relayed to a session-era agent, and the agent's answers, on any gateway process.

The process whose upstream asked waits for the answer; the agent POSTs it wherever the balancer sends it. The id
the gateway gives a relayed request names the asking process (peers.new_id): a process that gets an answer it is
not waiting for passes it to that process (peers.py), where it is delivered if it belongs to the same session.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.protocol import peers

log = logging.getLogger("portcullis.answers")

# ask id → (session id, the future the asking request waits on)
_WAITING: dict[str, tuple[str, asyncio.Future]] = {}


def new_question(session_id: str) -> tuple[str, asyncio.Future]:
    """An id for a relayed request of this session and the future its answer resolves."""
    peers.listen()
    ask_id = f"portcullis-{peers.new_id(9)}"
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


def _deliver_here(ask_id: object, session_id: object, raw: object) -> bool:
    waiting = _WAITING.get(ask_id) if isinstance(ask_id, str) else None
    if waiting is None or waiting[0] != session_id or waiting[1].done() or not isinstance(raw, dict):
        return False
    waiting[1].set_result(raw)
    return True


async def deliver(ask_id: object, session_id: str, raw: dict) -> None:
    """The agent's answer (a JSON-RPC response) to a relayed request: resolved here, or passed to the process that
    asked. An answer nobody waits for is dropped, as a stray response is."""
    if _deliver_here(ask_id, session_id, raw):
        return
    holder = peers.holder_of(ask_id) if isinstance(ask_id, str) and ask_id.startswith("portcullis-") else None
    if peers.is_here(holder):
        return
    try:
        await peers.send(holder, "agent.answer", {"ask_id": ask_id, "session_id": session_id, "body": raw})
    except Exception as exc:  # the asking process times out its request, as for an answer that never came
        log.warning("an agent's answer could not be passed to the process that asked: %s", exc)


async def _from_a_peer(payload: dict) -> None:
    _deliver_here(payload.get("ask_id"), payload.get("session_id"), payload.get("body"))


peers.on("agent.answer", _from_a_peer)
