"""Grants: an agent's credential for one or more servers. Tokens are shown once and stored hashed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import transaction

from gateway import tokens
from gateway.models import Grant, Server

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class GrantError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    """'90m', '12h', '30d', '2w' → timedelta."""
    match = _DURATION.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise GrantError(f"expiry {text!r} is not a duration: "
                         "write a positive number and a unit, e.g. 90m, 12h, 30d, 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class NewGrant:
    grant: Grant
    token: str  # the only time the clear token exists outside the agent's hands


@transaction.atomic
def create_grant(name: str, servers: list[Server], expires_at: datetime | None, created_by=None) -> NewGrant:
    if not servers:
        raise GrantError("a grant must cover at least one server")
    if Grant.objects.filter(name=name).exists():
        raise GrantError(f"a grant named {name!r} already exists; pick another name (or revoke that grant first)")
    token = tokens.new_token()
    while Grant.objects.filter(token_prefix=tokens.prefix_of(token)).exists():  # a prefix must identify one grant
        token = tokens.new_token()
    grant = Grant(name=name, token_prefix=tokens.prefix_of(token), token_digest=tokens.digest(token),
                  expires_at=expires_at, created_by=created_by)
    grant.full_clean(exclude=["token_digest"])
    grant.save()
    grant.servers.set(servers)
    return NewGrant(grant=grant, token=token)


def revoke(grant: Grant, now: datetime) -> bool:
    """Revoke; takes effect on the next call. Returns False if it was already revoked."""
    updated = Grant.objects.filter(pk=grant.pk, revoked_at__isnull=True).update(revoked_at=now)
    grant.refresh_from_db(fields=["revoked_at"])
    return bool(updated)


class AuthFailure(Exception):
    """status 401 (no valid token) or 403 (valid token, server not covered); message safe to show the agent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def authenticate(token: str | None, server: Server, now: datetime) -> CallGrant:
    """The grant behind a bearer token, if it may use this server now and the server is enabled; AuthFailure with
    the reason otherwise. The one implementation: fixed SQL (call_auth_sql) read by check_call_auth, which
    calls.admit runs too with its own columns added; the digest is compared in constant time."""
    from django.db import connection

    check_token_shape(token)
    with connection.cursor() as cursor:
        cursor.execute(call_auth_sql(), [*call_auth_params(server, now), tokens.prefix_of(token)])
        row = cursor.fetchone()
    return check_call_auth(row, token, server, now)


LAST_USED_RESOLUTION = timedelta(seconds=60)  # last_used_at is refreshed at most this often (one write saved)


def call_auth_sql(extra_columns: str = "", extra_from: str = "") -> str:
    """Authentication as fixed SQL: the grant found by its token prefix, whether it is revoked, expired, covers the
    server and needs last_used_at refreshed, and the server's enabled flag. A caller (calls.admit) may append its
    own columns and joins so that one round trip fetches everything a decision needs. Parameters, in order: now,
    server id, now - LAST_USED_RESOLUTION, server id, [the extra parameters], token prefix."""
    grants, links = Grant._meta.db_table, Grant.servers.through._meta.db_table
    return (
        f"SELECT g.id, g.name, g.token_digest, g.revoked_at IS NOT NULL, "
        f"CASE WHEN g.expires_at IS NOT NULL AND g.expires_at <= %s THEN 1 ELSE 0 END, "
        f"CASE WHEN EXISTS (SELECT 1 FROM {links} l WHERE l.grant_id = g.id AND l.server_id = %s) "
        f"THEN 1 ELSE 0 END, "
        f"CASE WHEN g.last_used_at IS NULL OR g.last_used_at < %s THEN 1 ELSE 0 END, "
        f"(SELECT s.enabled FROM {Server._meta.db_table} s WHERE s.id = %s){extra_columns} "
        f"FROM {grants} g{extra_from} WHERE g.token_prefix = %s")


def call_auth_params(server: Server, now: datetime, adapt: Callable[[datetime], object] | None = None) -> list:
    """The parameters of call_auth_sql(); `adapt` turns a datetime into the database's value (the default
    connection's adaptation when not given)."""
    if adapt is None:
        from django.db import connection

        adapt = connection.ops.adapt_datetimefield_value
    return [adapt(now), server.pk, adapt(now - LAST_USED_RESOLUTION), server.pk]


class CallGrant(NamedTuple):
    """The grant of one call: what the hot path needs, without building a model instance."""

    pk: int
    name: str


CALL_AUTH_COLUMNS = 8  # the columns call_auth_sql() selects before the caller's own


def check_call_auth(row: tuple | None, token: str | None, server: Server, now: datetime,
                    before_refresh: Callable[[], None] | None = None) -> CallGrant:
    """The grant from a call_auth_sql() row, or AuthFailure with the reason; refreshes last_used_at (after
    calling `before_refresh`, when given)."""
    if row is None or not token or not tokens.matches(token, row[2]):
        raise AuthFailure(401, "unknown token")
    grant_id, name, _, revoked, expired, covers, stale, enabled = row[:CALL_AUTH_COLUMNS]
    if revoked:
        raise AuthFailure(401, "this grant has been revoked")
    if expired:
        raise AuthFailure(401, "this grant has expired")
    if not covers:
        raise AuthFailure(403, f"this grant does not cover server {server.slug!r}")
    if not enabled:
        raise AuthFailure(403, f"server {server.slug!r} is disabled by an operator")
    if stale:
        if before_refresh is not None:
            before_refresh()
        Grant.objects.filter(pk=grant_id).update(last_used_at=now)
    return CallGrant(grant_id, name)


def check_token_shape(token: str | None) -> None:
    if not token or not tokens.looks_like_token(token):
        raise AuthFailure(401, "missing or malformed bearer token")
