"""The record of every change to a server's registration, shown like policy versions.

`snapshot` captures a server as it is (secret values only in memory, to tell which keys changed); `record` writes
one ServerChange row with the lines `describe` finds between two snapshots. Secret values are never written: a
line says "env API_KEY changed", never what it was or became.
"""

from __future__ import annotations

from gateway.models import Server, ServerChange

SESSION_SETTINGS = (("allow_sampling", "may ask agents to sample"), ("allow_elicitation", "may ask agents' users"),
                    ("allow_roots", "may list agents' roots"), ("isolate_sessions", "isolates sessions"))


def snapshot(server: Server | None) -> dict:
    """The server as it is now; {} for one not registered yet."""
    if server is None or server.pk is None:
        return {}
    return {
        "name": server.name, "transport": server.transport, "timeout": server.timeout_seconds,
        "enabled": server.enabled,
        "target": server.target_display() if (server.command or server.url) else "",
        "env": dict(server.env), "headers": dict(server.headers),
        **{name: getattr(server, name) for name, _ in SESSION_SETTINGS},
        "on_change": server.on_definition_change, "hold_new": server.hold_new_tools,
    }


def describe(before: dict, after: dict) -> list[str]:
    """What changed, one line each; secret values never appear."""
    if not before:
        where = after["target"]
        return [f"registered: {after['transport']} {where}" + _secret_keys(after)]
    lines = []
    for key, label in (("transport", "transport"), ("target", "command" if after["transport"] == "stdio" else
                                                                "URL"), ("name", "name"),
                       ("timeout", "timeout (s)")):
        if before[key] != after[key]:
            lines.append(f"{label}: {before[key] or '—'} → {after[key] or '—'}")
    if before["enabled"] != after["enabled"]:
        lines.append("enabled" if after["enabled"] else "disabled: every call is refused")
    for name, label in SESSION_SETTINGS:
        if before.get(name, after[name]) != after[name]:
            lines.append(f"{label}: {'yes' if after[name] else 'no'}")
    if before.get("on_change", after["on_change"]) != after["on_change"]:
        lines.append("a changed tool is " + ("held until a person approves it" if after["on_change"] == "block"
                                             else "flagged and stays callable"))
    if before.get("hold_new", after["hold_new"]) != after["hold_new"]:
        lines.append("new tools are " + ("held until a person approves them" if after["hold_new"] else
                                         "trusted on first sight"))
    for kind, label in (("env", "env"), ("headers", "header")):
        old, new = before[kind], after[kind]
        lines += [f"{label} {key} added" for key in sorted(new.keys() - old.keys())]
        lines += [f"{label} {key} changed" for key in sorted(old.keys() & new.keys()) if old[key] != new[key]]
        lines += [f"{label} {key} removed" for key in sorted(old.keys() - new.keys())]
    return lines


def _secret_keys(state: dict) -> str:
    keys = [*state["env"], *state["headers"]]
    return f" (secrets: {', '.join(sorted(keys))})" if keys else ""


def record(server: Server, before: dict, *, actor: str, user=None) -> ServerChange | None:
    """A row for what changed since `before` (nothing when nothing did)."""
    lines = describe(before, snapshot(server))
    if not lines:
        return None
    summary = "; ".join(lines)
    return ServerChange.objects.create(server=server, slug=server.slug, user=user, actor=actor[:200],
                                       summary=summary[:500], details=lines)
