"""Shared look-ups for the management commands: clear errors for unknown slugs and names."""

from __future__ import annotations

from django.core.management.base import CommandError

from gateway.models import Grant, Server


def server_by_slug(slug: str) -> Server:
    try:
        return Server.objects.get(slug=slug)
    except Server.DoesNotExist:
        known = ", ".join(Server.objects.values_list("slug", flat=True)) or "none yet: use register_server"
        raise CommandError(f"no server with slug {slug!r} (known: {known})") from None


def grant_by_name(name: str) -> Grant:
    try:
        return Grant.objects.get(name=name)
    except Grant.DoesNotExist:
        raise CommandError(
            f"no grant named {name!r}; list them in the dashboard or create one with create_grant") from None


def key_values(pairs: list[str], option: str) -> dict[str, str]:
    """['K=V', ...] → {K: V}; the value may contain '='."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"{option} {pair.split('=')[0]!r}…: write {option} NAME=VALUE")
        result[key.strip()] = value
    return result
