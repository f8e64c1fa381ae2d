"""A grant's own rules as a layer on top of its server's policy (pure: standard library + gateway.policy).

The layer holds only what differs for the grant; everything else falls through to the server's current policy.
`merge` gives the document that decides the grant's calls; `layer_of` finds the smallest layer that turns the
server's document into a given one, or says why no layer can. The precedence is documented in docs/POLICY.md
("Grant rules"):

- `tools` and `risk`: the layer's rule for a key replaces the server's rule for that key; other keys stay;
- `default`, `show_denied`, `on_deny`: the layer's value, where the layer has one;
- `hide`: the server's entries, then the layer's (a layer hides more, never less);
- `all_tools.limits`: the server's limits, then the layer's (a layer limits more, never less).

Then the merged document is read like any policy: an exact key beats a glob, and so on.
"""

from __future__ import annotations

import copy

from gateway.policy import PolicyInvalid, Problem, export_policy, parse_policy

LAYER_FIELDS = ("default", "show_denied", "on_deny", "hide", "all_tools", "risk", "tools")


def merge(server: dict | None, layer: dict) -> dict:
    """The canonical document that decides a grant's calls (raises PolicyInvalid if the two do not fit)."""
    if server is None:  # no server policy yet: the grant's rules are all there is
        return export_policy(parse_policy({"version": "1", "default": "deny", **copy.deepcopy(layer)}))
    doc = copy.deepcopy(server)
    for key in ("default", "show_denied", "on_deny"):
        if key in layer:
            doc[key] = layer[key]
    if layer.get("hide"):
        doc["hide"] = list(doc.get("hide", [])) + [e for e in layer["hide"] if e not in doc.get("hide", [])]
    if layer.get("all_tools", {}).get("limits"):
        limits = list(doc.get("all_tools", {}).get("limits", [])) + list(layer["all_tools"]["limits"])
        doc["all_tools"] = {**doc.get("all_tools", {}), "limits": limits}
    for key in ("risk", "tools"):
        if layer.get(key):
            doc[key] = {**doc.get(key, {}), **copy.deepcopy(layer[key])}
    return export_policy(parse_policy(doc))


def layer_of(document: dict, server: dict | None) -> dict:
    """The smallest layer with merge(server, layer) == document; PolicyInvalid naming what a layer cannot say
    (a grant's rules add or replace, they never remove one of the server's rules)."""
    document = export_policy(parse_policy(document))
    if server is None:
        return {k: v for k, v in document.items() if k != "version"}
    problems: list[Problem] = []
    layer: dict = {}
    if bool(document.get("show_denied")) != bool(server.get("show_denied")):
        layer["show_denied"] = bool(document.get("show_denied"))
    for key in ("default", "on_deny"):
        if document.get(key, _ABSENT) != server.get(key, _ABSENT):
            if key not in document:
                problems.append(Problem(f"/{key}", f"the server's policy sets {key}; a grant's rules can set "
                                                   "another value but cannot remove it"))
            else:
                layer[key] = document[key]
    hide, server_hide = document.get("hide", []), server.get("hide", [])
    if hide[:len(server_hide)] != server_hide:
        problems.extend(Problem("/hide", f"the server's policy hides {e!r}; a grant's rules can hide more, "
                                         "never less") for e in server_hide if e not in hide)
        if not problems:
            problems.append(Problem("/hide", "the server's hide entries must come first, in the server's order"))
    elif hide[len(server_hide):]:
        layer["hide"] = hide[len(server_hide):]
    limits = document.get("all_tools", {}).get("limits", [])
    server_limits = server.get("all_tools", {}).get("limits", [])
    if limits[:len(server_limits)] != server_limits:
        problems.append(Problem("/all_tools/limits", "a grant's rules can add limits for all tools, not remove or "
                                                     "change the server's"))
    elif limits[len(server_limits):]:
        layer["all_tools"] = {"limits": limits[len(server_limits):]}
    for key in ("risk", "tools"):
        mine, theirs = document.get(key, {}), server.get(key, {})
        problems.extend(Problem(f"/{key}/{name}", f"the server's policy has a rule for {name}; a grant's rules can "
                                                  "replace it with another rule but cannot remove it")
                        for name in theirs if name not in mine)
        changed = {name: rule for name, rule in mine.items() if theirs.get(name) != rule}
        if changed:
            layer[key] = changed
    if problems:
        raise PolicyInvalid(problems)
    if merge(server, layer) != document:  # e.g. a layered glob whose order the merge cannot keep
        raise PolicyInvalid([Problem("", "this policy cannot be written as rules on top of the server's policy")])
    return layer


def rule_count(layer: dict | None) -> int:
    """How many rules and settings a layer holds (for "1 grant adds 3 rules")."""
    if not layer:
        return 0
    return (len(layer.get("tools", {})) + len(layer.get("risk", {})) + len(layer.get("hide", []))
            + len(layer.get("all_tools", {}).get("limits", [])) + sum(k in layer for k in ("default", "show_denied",
                                                                                         "on_deny")))


_ABSENT = object()
