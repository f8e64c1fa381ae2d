"""Policies to start from in the builder: a new server's first policy is one click away, then edited and saved.

Each is a complete, canonical policy; "risk tiers" is the risk-tier policy PolicyLayer recommends (reads allowed,
writes limited, destructive and financial tools denied, execution held for a person)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from gateway.policy.editing import normalize

DESTRUCTIVE = "destructive tools can lose data or take systems down, so agents may not call them here; ask an operator"
FINANCIAL = "tools that spend money are not available to agents here; ask an operator"


@dataclass(frozen=True)
class Template:
    key: str
    title: str
    says: str
    document: dict


def _seed() -> dict:
    return json.loads(resources.files("gateway").joinpath("seed/truenas-policy.json").read_text(encoding="utf-8"))


def all_templates() -> list[Template]:
    return [
        Template("read-only", "Read-only", "read tools allowed; everything else refused",
                 normalize({"version": "1", "default": "deny", "risk": {"read": {}}})),
        Template("risk-tiers", "Risk tiers (recommended)",
                 "reads allowed; writes at most 30 a minute per grant; execution held for a person; destructive and "
                 "financial tools refused with a reason; anything else refused",
                 normalize({"version": "1", "default": "deny", "risk": {
                     "read": {},
                     "write": {"limits": [{"counter": "writes", "window": "minute", "max": 30, "scope": "grant"}]},
                     "execute": {"action": "approve"},
                     "destructive": {"action": "deny", "on_deny": DESTRUCTIVE},
                     "financial": {"action": "deny", "on_deny": FINANCIAL}}})),
        Template("reads-and-approval", "Reads, and a person approves the rest",
                 "reads allowed; every other call waits for a person in Approvals",
                 normalize({"version": "1", "default": "deny", "risk": {
                     "read": {}, **{tier: {"action": "approve"} for tier in
                                    ("write", "execute", "destructive", "financial")}}})),
        Template("truenas-seed", "The TrueNAS policy this project ships",
                 "risk tiers for the TrueNAS tools, with cloud_backup_run at most 10 a minute per grant",
                 normalize(_seed())),
    ]


def by_key(key: str) -> Template | None:
    return next((t for t in all_templates() if t.key == key), None)
