"""Where a matched rule (a JSON Pointer into a policy) is edited in the builder: shared by the call log and the
approvals queue."""

from __future__ import annotations

from django.urls import reverse

from gateway.policy import RISK_LEVELS, pointer_join
from gateway.policy import editing as policy_edit


def rule_link(rule: str, server_slug: str) -> str:
    """The builder page for this rule of this server's policy ('' when there is no rule)."""
    if not rule or not server_slug:
        return ""
    builder = reverse("dashboard:builder", kwargs={"slug": server_slug})
    parts = rule.split("/")
    if len(parts) > 2 and parts[1] == "tools":
        name = parts[2].replace("~1", "/").replace("~0", "~")
        if pointer_join("/tools", name) == "/tools/" + parts[2]:
            view, key = ("glob_rule", "key") if policy_edit.is_glob(name) else ("tool_rule", "name")
            return reverse(f"dashboard:{view}", kwargs={"slug": server_slug, key: name})
    if len(parts) > 2 and parts[1] == "risk":
        return f"{builder}?{'level' if parts[2] in RISK_LEVELS else 'category'}={parts[2]}"
    return builder
