"""The folders of gateway/ are its layers, and imports only go down (docs/ARCHITECTURE.md, "Layers").

    edge        HTTP: the ASGI apps, HTTP checks, start-up
    protocol    async MCP: eras, methods, sessions, streams, held calls, bridges
    calls       sync database half of a call         catalogue   listing sync, risk, refresh, review
    upstream    reaching MCP servers with the SDK        notify      telling people (webhooks, email)
    telemetry   metrics and traces (the layers above report into it)
    (root)      models and small shared services: grants, tokens, vault, redaction, events, policies, ...
    policy      pure: the engine, the document, diffs, edits

A module may import its own layer and the layers below; `calls` and `catalogue` share a level and stay apart, as do
`upstream` and `notify`.
The management commands sit on top. The pure modules import only the standard library (and each other).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"
LEVEL = {"policy": 0, "": 1, "telemetry": 1.5, "notify": 2, "upstream": 2, "calls": 3, "catalogue": 3, "protocol": 4,
         "edge": 5, "management": 6}
PURE = {"gateway/policy/engine.py", "gateway/policy/document.py", "gateway/policy/diff.py",
        "gateway/policy/editing.py", "gateway/policy/risk.py", "gateway/policy/dispatch.py",
        "gateway/policy/replay.py", "gateway/policy/behaviour.py"}


def layer_of(module: str) -> str:
    """gateway.calls.audit → calls; gateway.models → '' (the root)."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LEVEL and (GATEWAY / parts[1]).is_dir():
        return parts[1]
    return ""


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def gateway_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a gateway module, at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("gateway")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway"):
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:  # `from gateway.calls import audit` imports gateway.calls.audit
                sub = f"{node.module}.{alias.name}"
                is_module = (GATEWAY.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (GATEWAY.parent / Path(*sub.split("."))).is_dir()
                found.append((node.lineno, sub if is_module else node.module))
    return found


def upward_imports(path: Path, source: str | None = None) -> list[str]:
    source = source or module_name(path)
    own = layer_of(source)
    problems = []
    for line, target in gateway_imports(path):
        theirs = layer_of(target)
        if theirs == own:
            continue
        if LEVEL[theirs] >= LEVEL[own]:
            problems.append(f"{source}:{line} ({own or 'root'}) imports {target} ({theirs or 'root'})")
    return problems


MODULES = sorted(p for p in GATEWAY.rglob("*.py") if "migrations" not in p.parts)


def test_every_gateway_module_is_in_a_known_layer():
    for path in MODULES:
        parts = path.relative_to(GATEWAY).parts
        assert len(parts) == 1 or parts[0] in LEVEL, f"{path}: put it in one of the layer folders"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_imports_only_go_down_the_layers(path):
    assert upward_imports(path) == []


@pytest.mark.parametrize("module", sorted(PURE))
def test_the_pure_modules_import_only_the_standard_library_and_each_other(module):
    allowed = {name.removesuffix(".py").replace("/", ".") for name in PURE} | {"gateway.policy"}
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            top = name.split(".")[0]
            assert name in allowed or top in sys.stdlib_module_names or top == "__future__", f"{module}: {name}"


def test_gateway_never_imports_the_dashboard():
    for path in MODULES:
        text = path.read_text(encoding="utf-8")
        assert "from dashboard" not in text and "import dashboard" not in text, path


def test_the_check_reports_an_upward_import(tmp_path):
    """The layering test itself: a calls module importing the protocol is reported, with its line."""
    text = (GATEWAY / "calls" / "audit.py").read_text(encoding="utf-8")
    copy = tmp_path / "audit.py"
    copy.write_text(text + "\nfrom gateway.protocol import relay  # upward\n", encoding="utf-8")
    lines = len(copy.read_text(encoding="utf-8").splitlines())
    assert upward_imports(copy, "gateway.calls.audit") == [
        f"gateway.calls.audit:{lines} (calls) imports gateway.protocol.relay (protocol)"]
