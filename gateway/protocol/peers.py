"""The other gateway processes, over the channel layer (Redis across processes; in one process, itself).

Each process listens on its own group, `portcullis.process.<key>` (a key of 16 hex digits, random per process).
What must reach the one process that holds something is sent there: an agent's answer to a question its upstream
asked (answers.py), a legacy SSE message for the stream a process holds (edge/legacy_sse.py), the retry of a call
parked in a process (tools_call.py). Ids that name a holder carry its key (`<random>.<key>`), so any process can
tell where to send without a lookup. A key is only ever a gateway process's group: an agent cannot address
anything else. Messages may carry an agent's bearer token (the holder authenticates it again): the channel layer
must be as private as the database (docs/DEPLOYMENT.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable

from channels.layers import get_channel_layer

log = logging.getLogger("portcullis.peers")

PROCESS_KEY = secrets.token_hex(8)
_KEY = re.compile(r"^[0-9a-f]{16}$")
_ID_KEY = re.compile(r"\.([0-9a-f]{16})$")
Handler = Callable[[dict], Awaitable[dict | None]]
_HANDLERS: dict[str, Handler] = {}
_REPLIES: dict[str, asyncio.Future] = {}
_listener: asyncio.Task | None = None
CALL_TIMEOUT_S = 15.0


class PeerUnavailable(RuntimeError):
    """The process that holds it did not answer: it stopped, or the channel layer is down."""


def group_of(key: str) -> str:
    return f"portcullis.process.{key}"


def new_id(size: int = 16) -> str:
    """A random id that names this process as its holder."""
    return f"{secrets.token_urlsafe(size)}.{PROCESS_KEY}"


def holder_of(held_id: object) -> str | None:
    """The key of the process an id names; None for an id of no process (or a malformed one)."""
    match = _ID_KEY.search(held_id) if isinstance(held_id, str) else None
    return match.group(1) if match else None


def is_here(key: str | None) -> bool:
    return key is None or key == PROCESS_KEY


def on(kind: str, handler: Handler) -> None:
    """Handle messages of `kind` sent to this process; what the handler returns goes back to a `call`."""
    _HANDLERS[kind] = handler


async def send(key: str, kind: str, payload: dict) -> None:
    """Fire and forget (an answer nobody waits for any more is dropped there)."""
    if not _KEY.match(key):
        return
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group_of(key), {"type": "peer.message", "kind": kind, "payload": payload})


async def call(key: str, kind: str, payload: dict, timeout: float = CALL_TIMEOUT_S) -> dict:
    """Send and wait for the holder's answer; PeerUnavailable when none comes."""
    if not _KEY.match(key):
        raise PeerUnavailable("not a gateway process")
    layer = get_channel_layer()
    if layer is None:
        raise PeerUnavailable("no channel layer")
    listen()
    reply_id = secrets.token_hex(12)
    future = asyncio.get_running_loop().create_future()
    _REPLIES[reply_id] = future
    try:
        await layer.group_send(group_of(key), {"type": "peer.message", "kind": kind, "payload": payload,
                                               "reply_to": PROCESS_KEY, "reply_id": reply_id})
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise PeerUnavailable(f"the gateway process holding it did not answer within {timeout:g} s") from None
    except PeerUnavailable:
        raise
    except Exception as exc:
        raise PeerUnavailable(f"the channel layer failed ({type(exc).__name__})") from None
    finally:
        _REPLIES.pop(reply_id, None)


def listen() -> None:
    """Start this process's listener (idempotent); a process that may be sent something must already listen."""
    global _listener
    if _listener is None or _listener.done():
        _listener = asyncio.create_task(_listen(), name="portcullis:peers")


async def _listen() -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    # The default prefix, as Channels' consumers use: a Redis layer receives every channel of one prefix in this
    # process with one blocking pop at a time, so a channel of another prefix would delay the dashboard's events.
    channel = await layer.new_channel()
    await layer.group_add(group_of(PROCESS_KEY), channel)
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis went away: try again shortly, renewing the membership
            log.warning("peer listener: %s", exc)
            await asyncio.sleep(1)
            try:
                await layer.group_add(group_of(PROCESS_KEY), channel)
            except Exception:  # noqa: BLE001, S110 - retried on the next round
                pass
            continue
        if message.get("type") == "peer.message":
            task = asyncio.create_task(_handle(message))
            _running.add(task)
            task.add_done_callback(_running.discard)


_running: set[asyncio.Task] = set()


async def _handle(message: dict) -> None:
    kind, payload = message.get("kind"), message.get("payload")
    if kind == "reply":
        future = _REPLIES.get(message.get("reply_id"))
        if future is not None and not future.done():
            future.set_result(payload if isinstance(payload, dict) else {})
        return
    handler = _HANDLERS.get(kind)
    if handler is None or not isinstance(payload, dict):
        return
    try:
        answer = await handler(payload)
    except Exception:  # the sender times out; the fault is this process's to log
        log.exception("handling a %s from another gateway process failed", kind)
        return
    reply_to = message.get("reply_to")
    if isinstance(reply_to, str) and _KEY.match(reply_to):
        layer = get_channel_layer()
        await layer.group_send(group_of(reply_to), {"type": "peer.message", "kind": "reply",
                                                    "reply_id": message.get("reply_id"), "payload": answer or {}})
