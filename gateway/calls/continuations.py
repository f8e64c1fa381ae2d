"""The gateway's own `requestState` for a stateless-era agent's multi round-trip tools/call.

A stateless-era (2026-07-28) upstream may end a tools/call with `input_required`; the agent answers and calls
the same tool again with `inputResponses` and the `requestState` it was given. Each round is a separate request
to the gateway, but one call to the policy: its counters are reserved once, by the first round. So the gateway
must recognise a later round as the continuation of a call it admitted, and an agent must not be able to pass a
new call off as one (to skip a limit) or replay a round forever.

Hence the upstream's `requestState` never reaches the agent as it is: the gateway hands out a sealed state,
HMAC-signed with a key derived from SECRET_KEY (its own label, as gateway/tokens.py does), that carries the
upstream's original state and what the continuation is bound to: the first round's audit row, the grant, the
server, the tool, the hash of the exact arguments (audit.argument_hash), the round number, a random round id
(single use, see gateway/calls/admission.py) and an expiry (PORTCULLIS_CONTINUATION_TTL_S). It is signed, not encrypted:
the only thing in it the agent did not send itself is the upstream's own state, which a direct client of the
upstream would hold anyway (and which a conforming upstream seals on its side).

Format: `pcs1.<base64url of the JSON claims>.<base64url of HMAC-SHA256 over "pcs1.<claims>">`.

Two kinds share the format. An *upstream round* carries the upstream's own requestState (a stateless-era
upstream). A *parked call* (claim `p`, protocol/parked_calls.py) names an upstream call the gateway holds open in
this process: a session-era upstream asked a server→client request mid-call, the gateway turned it into the
agent's `input_required`, and the retry's answer goes to that waiting request. Both are bound, expiring and single
use in the same way.

Pure apart from reading settings: no database, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

PREFIX = "pcs1"
# An upstream still asking after this many answered rounds is not converging (as gateway/protocol/input_bridge.py).
MAX_ROUNDS = 8
# What the agent reads when its requestState cannot continue a call: it can always start the call afresh.
START_AGAIN = "call the tool again without requestState (and without inputResponses) to start the call afresh"


class Invalid(Exception):
    """The requestState cannot continue this call; the message says why (the agent reads it)."""


@dataclass(frozen=True)
class Continuation:
    """A verified continuation: which admitted call it continues, and what to send the upstream."""

    first_call_id: int
    round_no: int  # 1 for the agent's first retry, 2 for the next, ...
    round_id: str  # random; the round's single-use key (gateway/calls/admission.py)
    expires_at: int  # epoch seconds
    upstream_state: str | None  # the upstream's own requestState, forwarded unchanged
    parked_id: str | None = None  # a parked upstream call of this process (gateway/protocol/parked_calls.py)

    @property
    def use_key(self) -> str:
        """The counter key that makes this round single use (a counter row of max 1, swept after expiry)."""
        return f"continuation:{self.round_id}"


@dataclass(frozen=True)
class Binding:
    """What a sealed state is bound to: the exact call, by whom, where."""

    grant_id: int
    server_id: int
    tool_name: str
    argument_hash: str


def seal(upstream_state: str | None, *, binding: Binding, first_call_id: int, round_no: int, now: datetime,
         parked_id: str | None = None) -> str:
    """The requestState the agent gets instead of the upstream's, for the `round_no`-th continuation; with
    `parked_id`, the state names the parked upstream call the answer is for (and carries no upstream state)."""
    claims = {"s": upstream_state, "c": first_call_id, "n": round_no, "r": secrets.token_urlsafe(12),
              "e": expiry(now), "g": binding.grant_id,
              "v": binding.server_id, "t": binding.tool_name, "a": binding.argument_hash}
    if parked_id is not None:
        claims["p"] = parked_id
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode())
    signed = f"{PREFIX}.{body}"
    return f"{signed}.{_b64(_mac(signed))}"


def unseal(state: object, *, binding: Binding, now: datetime) -> Continuation:
    """The continuation a requestState stands for, or Invalid with the reason. Every check fails closed."""
    if not isinstance(state, str):
        raise Invalid(f"requestState is not valid for this call (not a string): {START_AGAIN}")
    prefix, _, rest = state.partition(".")
    body, _, mac = rest.partition(".")
    if prefix != PREFIX or not body or not mac:
        raise Invalid(f"requestState is not valid for this call (not issued by this gateway): {START_AGAIN}")
    try:
        good = hmac.compare_digest(_unb64(mac), _mac(f"{prefix}.{body}"))
    except (ValueError, binascii.Error):
        good = False
    if not good:
        raise Invalid(f"requestState is not valid for this call (its signature does not match): {START_AGAIN}")
    try:
        claims = json.loads(_unb64(body))
        continuation = Continuation(first_call_id=int(claims["c"]), round_no=int(claims["n"]),
                                    round_id=str(claims["r"]), expires_at=int(claims["e"]),
                                    upstream_state=claims["s"], parked_id=claims.get("p"))
        bound = Binding(int(claims["g"]), int(claims["v"]), str(claims["t"]), str(claims["a"]))
    except (ValueError, KeyError, TypeError, binascii.Error):  # signed by us, so only a format change gets here
        raise Invalid(f"requestState is not valid for this call (unreadable): {START_AGAIN}") from None
    if (continuation.upstream_state is not None and not isinstance(continuation.upstream_state, str)) or \
            (continuation.parked_id is not None and not isinstance(continuation.parked_id, str)):
        raise Invalid(f"requestState is not valid for this call (unreadable): {START_AGAIN}")
    if continuation.expires_at <= now.timestamp():
        raise Invalid(f"requestState is not valid for this call (it expired; a call's rounds must follow within "
                      f"{settings.PORTCULLIS_CONTINUATION_TTL_S} s): {START_AGAIN}")
    if bound != binding:
        raise Invalid(f"requestState is not valid for this call (it belongs to another call: a different grant, "
                      f"server, tool or arguments; retry with exactly the same arguments, or {START_AGAIN})")
    return continuation


def parked_id_of(state: object) -> str | None:
    """The parked call a genuine requestState names (its signature checked, nothing else: where to send the retry,
    not whether it is valid, which the holder's admission decides); None otherwise."""
    if not isinstance(state, str):
        return None
    prefix, _, rest = state.partition(".")
    body, _, mac = rest.partition(".")
    try:
        if prefix != PREFIX or not hmac.compare_digest(_unb64(mac), _mac(f"{prefix}.{body}")):
            return None
        parked = json.loads(_unb64(body)).get("p")
    except (ValueError, binascii.Error, AttributeError):
        return None
    return parked if isinstance(parked, str) else None


def expiry(now: datetime) -> int:
    """When a state sealed now expires (epoch seconds); a parked call is abandoned at the same moment."""
    return int(now.timestamp()) + settings.PORTCULLIS_CONTINUATION_TTL_S


def _mac(signed: str) -> bytes:
    return hmac.new(_key(settings.SECRET_KEY), signed.encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=4)
def _key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"portcullis continuation state v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
