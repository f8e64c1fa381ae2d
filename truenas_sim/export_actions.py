"""``python -m truenas_sim.export_actions``: write the 278 actions of the umbrella tool as the action list
Portcullis imports for a TrueNAS dispatcher (gateway/seed/truenas-actions.json): name, category, our
description and the parameters' schema. tests/catalogue/test_dispatchers.py checks the file is current."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .catalogue import UMBRELLA, describe, load_catalogue

TARGET = Path(__file__).resolve().parent.parent / "gateway" / "seed" / "truenas-actions.json"


def action_list() -> dict[str, Any]:
    catalogue = load_catalogue()
    return {
        "about": (f"The actions of the TrueNAS MCP server's one tool, {UMBRELLA}(category, action, params), for a "
                  "dispatcher's import. Written by `python -m truenas_sim.export_actions`."),
        "tool": UMBRELLA,
        "dispatcher": {"action": "/action", "match": ["/category"], "params": "/params"},
        "actions": [{"name": spec.name, "match": {"/category": spec.category}, "description": describe(spec),
                     "inputSchema": spec.schema} for spec in catalogue.tools.values()],
    }


def text() -> str:
    return json.dumps(action_list(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    TARGET.write_text(text())
    sys.stdout.write(f"wrote {TARGET}\n")
