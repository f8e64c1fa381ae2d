"""gateway.risk: each rule, odd input, and agreement with the TrueNAS reference data (-s prints the report)."""

from __future__ import annotations

import ast
import csv
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import risk
from gateway.policy.risk import CATEGORIES, LEVELS, Classification, category_rank, classify, level_rank, tokenize

RISK_SOURCE = Path(risk.__file__)
TSV = Path(__file__).parents[1] / "data" / "truenas-tools.tsv"


def case(name, category, level=None, *, description=None, schema=None, annotations=None, id=None):
    return pytest.param(name, description, schema, annotations, category, level, id=id or name or repr(name))


def check(name, description, schema, annotations, category, level):
    found = classify(name, description, schema, annotations)
    assert found.category == category, found.reasons
    if level is not None:
        assert found.level == level, found.reasons
    return found


# --- tokenising -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("pool_get_disks", ["pool", "get", "disks"]),
        ("file-share-delete", ["file", "share", "delete"]),
        ("getHTTPStatus", ["get", "http", "status"]),
        ("DeleteUser", ["delete", "user"]),
        ("DELETE_USER", ["delete", "user"]),
        ("repo.branches.list", ["repo", "branches", "list"]),
        ("github__create_issue", ["github", "create", "issue"]),
        ("server/tool:run now", ["server", "tool", "run", "now"]),
        ("s3PutObject2", ["s", "3", "put", "object", "2"]),
        ("ｄｅｌｅｔｅ_all", ["delete", "all"]),  # full-width letters are NFKC-normalised
        ("löschen_Datei", ["löschen", "datei"]),
        ("", []),
        ("___", []),
        (None, []),
        (42, []),
    ],
    ids=lambda v: repr(v) if not isinstance(v, list) else None,
)
def test_tokenize(name, words):
    assert tokenize(name) == words


# --- rule 1: the name -------------------------------------------------------------------------------------------

VERB_FAMILIES = [
    # read
    case("list_pools", "read", "low"),
    case("get_user", "read", "low"),
    case("query_audit_log", "read", "low"),
    case("read_file", "read", "low"),
    case("searchIssues", "read", "low"),
    case("show-status", "read", "low"),
    case("describe_instance", "read", "low"),
    case("service.status", "read", "low"),
    case("host_info", "read", "low"),
    case("check_health", "read", "low"),
    case("lookup_dns", "read", "low"),
    case("fetchPage", "read", "low"),
    case("config_download", "read", "low"),
    # write
    case("create_user", "write", "medium"),
    case("updateRecord", "write", "medium"),
    case("set-quota", "write", "medium"),
    case("add_member", "write", "medium"),
    case("edit_page", "write", "medium"),
    case("put_object", "write", "medium"),
    case("patch_issue", "write", "medium"),
    case("write_file", "write", "medium"),
    case("rename_branch", "write", "medium"),
    case("attach_volume", "write", "medium"),
    case("enable_service", "write", "medium"),
    case("disable_rule", "write", "medium"),
    case("configure_router", "write", "medium"),
    case("import_keys", "write", "medium"),
    case("upload_file", "write", "medium"),
    case("mount_share", "write", "medium"),
    case("clone_repo", "write", "medium"),
    # execute
    case("run_job", "execute", "high"),
    case("startVm", "execute", "high"),
    case("stop-service", "execute", "high"),
    case("restart_container", "execute", "high"),
    case("sync_folder", "execute", "high"),
    case("exec_command", "execute", "high"),
    case("execute_query_plan", "execute", "high"),
    case("trigger_build", "execute", "high"),
    case("scrub_pool", "execute", "high"),
    case("replicate_dataset", "execute", "high"),
    case("upgrade_app", "execute", "high"),
    case("install_package", "execute", "high"),
    case("deploy-site", "execute", "high"),
    case("send_email", "execute", "high"),
    case("invoke_function", "execute", "high"),
    # destructive
    case("delete_user", "destructive", "critical"),
    case("destroyCluster", "destructive", "critical"),
    case("remove-member", "destructive", "critical"),
    case("wipe_disk", "destructive", "critical"),
    case("export_volume", "destructive", "critical"),
    case("rollback_release", "destructive", "critical"),
    case("purge_queue", "destructive", "critical"),
    case("drop_table", "destructive", "critical"),
    case("erase_device", "destructive", "critical"),
    case("format_disk", "destructive", "critical"),
    case("reset_router", "destructive", "critical"),
    case("host_shutdown", "destructive", "critical"),
    case("host_reboot", "destructive", "critical"),
    case("kill_process", "destructive", "critical"),
    case("revoke_token", "destructive", "critical"),
    case("detach_volume", "destructive", "critical"),
    case("replace_disk", "destructive", "critical"),
    case("uninstall_app", "destructive", "critical"),
    # financial
    case("pay_bill", "financial", "critical"),
    case("charge_card", "financial", "critical"),
    case("transfer_funds", "financial", "critical"),
    case("refund_order", "financial", "critical"),
    case("purchase_license", "financial", "critical"),
    case("withdraw", "financial", "critical"),
    case("create_payout", "financial", "critical"),
    case("buyDomain", "financial", "critical"),
]


@pytest.mark.parametrize(("name", "description", "schema", "annotations", "category", "level"), VERB_FAMILIES)
def test_verb_families(name, description, schema, annotations, category, level):
    found = check(name, description, schema, annotations, category, level)
    assert any("name verb" in reason for reason in found.reasons)


NAME_SHAPES = [
    # several verbs: the most severe family wins
    case("update_and_apply", "execute", "high"),
    case("list_and_delete", "destructive", "critical"),
    case("get_or_create", "write", "medium"),
    case("delete_then_refund", "financial", "critical", id="financial outranks destructive"),
    case("stop_and_remove", "destructive", "critical"),
    case("config_upload", "write", "medium", id="getter noun plus write verb"),
    # separators and case
    case("smb-share.delete", "destructive", "critical"),
    case("Pool.Export", "destructive", "critical"),
    case("vm:start", "execute", "high"),
    case("DELETE_USER", "destructive", "critical"),
    case("deleteUser2", "destructive", "critical"),
    case("getHTTPStatus", "read", "low"),
    case("ｄｅｌｅｔｅ_all", "destructive", "critical", id="full-width delete"),
    # re- and un- prefixes
    case("rerun_job", "execute", "high"),
    case("unmount_share", "write", "medium"),
    case("reinstall_agent", "execute", "high"),
    # getter nouns and plural listings
    case("server_version", "read", "low"),
    case("cluster_state", "read", "low"),
    case("network_summary", "read", "low"),
    case("general_config", "read", "low"),
    case("team_members", "read", "low", id="plural noun is a listing"),
    case("open_sessions", "read", "low"),
    case("alert_policies", "read", "low"),
    # unknown: fail towards caution
    case("frobnicate", "execute", "high"),
    case("truenas", "execute", "high", id="singular ending in -as is not a plural"),
    case("access", "execute", "high"),
    case("", "execute", "high", id="empty name"),
    case("dеlete_all", "execute", "high", id="cyrillic homoglyph is unknown, not read"),
    # money nouns
    case("get_invoice", "read", "low"),
    case("list_payments", "read", "low"),
    case("create_invoice", "financial", "critical"),
    case("invoice", "financial", "critical"),
    case("billing_update", "financial", "critical"),
    # restart vs reboot
    case("service_restart", "execute", "high"),
    case("machine_reboot", "destructive", "critical"),
]


@pytest.mark.parametrize(("name", "description", "schema", "annotations", "category", "level"), NAME_SHAPES)
def test_name_shapes(name, description, schema, annotations, category, level):
    check(name, description, schema, annotations, category, level)


def test_unknown_name_explains_the_cautious_default():
    found = classify("frobnicate")
    assert found == Classification("execute", "high", found.reasons)
    assert "no known verb" in found.reasons[0]


def test_reasons_name_the_words_that_decided():
    found = classify("delete_user")
    assert found.reasons == ("name verb 'delete' → destructive",)
    found = classify("list_and_delete")
    assert "most severe word wins → destructive" in found.reasons


# --- rule 3: the description ------------------------------------------------------------------------------------

DESCRIPTIONS = [
    case("get_thing", "destructive", "critical", description="Gets the thing and deletes it afterwards."),
    case("get_thing", "read", "low", description="Gets the thing. Does not delete anything.", id="negated"),
    case("get_thing", "read", "low", description="Returns the thing without removing it.", id="without"),
    case("show_thing", "execute", "high", description="Executes the stored command."),
    case("show_thing", "write", "medium", description="Shows the thing and creates it when missing."),
    case("show_thing", "financial", "critical", description="This tool charges the card on file and pays it."),
    case("show_thing", "destructive", "critical", description="Shuts down the host."),
    case("list_jobs", "read", "low", description="Lists the runs of a job.", id="plural noun runs"),
    case("list_jobs", "execute", "high", description="Lists jobs. Runs the pending ones.", id="sentence verb"),
    case("frobnicate", "destructive", "critical", description="Delete the dataset.", id="leading imperative"),
    case("frobnicate", "execute", "high", description="Returns data. Export it later.", id="imperative later"),
    case("delete_user", "destructive", "critical", description="Lists users.", id="never lowers"),
    case("frobnicate", "execute", "high", description="Gets the version.", id="does not lower unknown"),
    case("get_pool", "read", "medium", description="Reads the pool; this cannot be undone.", id="danger phrase"),
    case("update_pool", "write", "high", description="Permanently changes the layout.", id="permanently"),
    case("update_pool", "write", "medium", description="This change is not permanent.", id="danger negated"),
    case("update_pool", "write", "medium", description="", id="empty description"),
    case("update_pool", "write", "medium", description=123, id="non-string description"),
]


@pytest.mark.parametrize(("name", "description", "schema", "annotations", "category", "level"), DESCRIPTIONS)
def test_description(name, description, schema, annotations, category, level):
    check(name, description, schema, annotations, category, level)


def test_description_reason():
    found = classify("get_thing", "Deletes it.")
    assert "description says 'deletes' → destructive" in found.reasons


# --- rule 4: the level ------------------------------------------------------------------------------------------


def props(**properties):
    return {"type": "object", "properties": properties}


BOOL = {"type": "boolean"}
TEXT = {"type": "string"}

SCHEMAS = [
    case("update_pool", "write", "high", schema=props(id=TEXT, confirm=BOOL), id="confirm"),
    case("update_pool", "write", "high", schema=props(force={"type": "boolean", "default": False}), id="force"),
    case("chown_path", "write", "high", schema=props(recursive=BOOL), id="recursive"),
    case("update_pool", "write", "high", schema=props(cascade=BOOL), id="cascade"),
    case("update_pool", "write", "high", schema=props(forceDelete=BOOL), id="camelCase flag"),
    case("update_pool", "write", "high", schema=props(force={"default": True}), id="untyped boolean"),
    case("update_pool", "write", "high", schema=props(delete_users=BOOL), id="destructive option"),
    case("update_pool", "write", "medium", schema=props(force=TEXT), id="string force is no flag"),
    case("update_pool", "write", "medium", schema=props(shutdown_timeout={"type": "number"}), id="non-boolean"),
    case("update_pool", "write", "high", schema=props(confirm=BOOL, force=BOOL, command=TEXT), id="one step in all"),
    case("delete_pool", "destructive", "critical", schema=props(confirm=BOOL), id="already critical"),
    case("list_pools", "read", "medium", schema=props(force=BOOL), id="read with flag"),
    case("api_call", "execute", "critical", schema=props(method={"enum": ["GET", "POST", "DELETE"]}), id="enum"),
    case("api_call", "execute", "high", schema=props(method={"enum": ["GET", "HEAD"]}), id="enum read only"),
    case("scrub_pool", "execute", "high", schema=props(action={"enum": ["START", "STOP"]}), id="enum execute"),
    case("dispatch", "execute", "critical", schema=props(action=TEXT, params={"type": "object"}), id="dispatcher"),
    case("create_cronjob", "write", "high", schema=props(command=TEXT), id="command"),
    case("create_hook", "write", "high", schema=props(script={}), id="script untyped"),
    case("update_dataset", "write", "medium", schema=props(exec={"enum": ["ON", "OFF"]}), id="enum not code"),
    case("list_credentials", "read", "medium", id="secrets in name"),
    case("download_config", "read", "medium", schema=props(secretseed=BOOL), id="secrets in params"),
    case("list_buckets", "read", "low", schema=props(credentials={"type": "number"}), id="credential id"),
    case("set_permissions", "write", "high", id="access subject"),
    case("update_privilege", "write", "high"),
    case("set_permissions", "write", "high", schema=props(recursive=BOOL), id="access subject and flag"),
    case("delete_thing", "destructive", "critical", id="floor destructive"),
    case("list_things", "read", "low", id="floor read"),
]


@pytest.mark.parametrize(("name", "description", "schema", "annotations", "category", "level"), SCHEMAS)
def test_schema_and_level(name, description, schema, annotations, category, level):
    check(name, description, schema, annotations, category, level)


def test_schema_reason():
    found = classify("update_pool", input_schema=props(confirm=BOOL))
    assert "schema has boolean 'confirm' → level raised" in found.reasons


def test_level_never_below_the_category_default():
    for name in ("list_x", "create_x", "run_x", "delete_x", "pay_x", "frobnicate"):
        found = classify(name)
        assert found.level == risk.DEFAULT_LEVEL[found.category]


# --- rule 5: annotations ----------------------------------------------------------------------------------------


class Hints:
    def __init__(self, **values):
        self.values = values

    def model_dump(self):
        return dict(self.values)


ANNOTATIONS = [
    case("delete_user", "destructive", "critical", annotations={"readOnlyHint": True}, id="readOnly lies"),
    case("run_job", "execute", "high", annotations={"readOnlyHint": True}, id="readOnly on execute"),
    case("frobnicate", "execute", "high", annotations={"readOnlyHint": True}, id="readOnly on unknown"),
    case("delete_user", "destructive", "critical", annotations={"destructiveHint": False}, id="not destructive lies"),
    case("list_users", "destructive", "critical", annotations={"destructiveHint": True}, id="destructive raises"),
    case("pay_bill", "financial", "critical", annotations={"destructiveHint": True}, id="destructive below money"),
    case("list_users", "write", "medium", annotations={"readOnlyHint": False}, id="not read-only"),
    case("frobnicate", "execute", "high", annotations={"readOnlyHint": False}, id="not read-only on unknown"),
    case("list_users", "read", "medium", annotations={"openWorldHint": True}, id="open world"),
    case("create_user", "write", "high", annotations={"openWorldHint": True}),
    case("list_users", "read", "low", annotations={"openWorldHint": False, "idempotentHint": True}),
    case("list_users", "destructive", "critical", annotations={"destructive_hint": True}, id="snake_case"),
    case("list_users", "destructive", "critical", annotations={"destructiveHint": "true"}, id="string true"),
    case("list_users", "read", "low", annotations={"destructiveHint": 1}, id="1 is not true"),
    case("list_users", "destructive", "critical", annotations=Hints(destructiveHint=True), id="model_dump"),
    case("list_users", "read", "low", annotations=["destructiveHint"], id="list ignored"),
    case("list_users", "read", "low", annotations="readOnlyHint", id="string ignored"),
    case(
        "list_users",
        "destructive",
        "critical",
        annotations={"readOnlyHint": True, "destructiveHint": True},
        id="contradictory hints raise",
    ),
]


@pytest.mark.parametrize(("name", "description", "schema", "annotations", "category", "level"), ANNOTATIONS)
def test_annotations(name, description, schema, annotations, category, level):
    check(name, description, schema, annotations, category, level)


def test_ignored_hint_is_recorded():
    found = classify("delete_user", annotations={"readOnlyHint": True})
    assert "annotation readOnlyHint ignored: the name says destructive" in found.reasons


HINT = st.one_of(st.booleans(), st.none(), st.sampled_from(["true", "false", "yes", 0, 1]))
HINTS = st.dictionaries(
    st.sampled_from(["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint", "read_only_hint", "title"]),
    HINT,
)
NAMES = st.sampled_from(["list_x", "create_x", "run_x", "delete_x", "pay_x", "frobnicate", "team_members", ""])


@settings(max_examples=300, deadline=None)
@given(name=NAMES, hints=HINTS)
def test_annotations_never_lower(name, hints):
    plain, hinted = classify(name), classify(name, annotations=hints)
    assert category_rank(hinted.category) >= category_rank(plain.category)
    assert level_rank(hinted.level) >= level_rank(plain.level)


# --- ranks ------------------------------------------------------------------------------------------------------


def test_ranks_order():
    assert [category_rank(c) for c in CATEGORIES] == [0, 1, 2, 3, 4]
    assert [level_rank(v) for v in LEVELS] == [0, 1, 2, 3]
    assert category_rank("financial") > category_rank("destructive") > category_rank("execute")
    assert category_rank(" Destructive ") == category_rank("destructive")
    assert level_rank("CRITICAL") == 3


@pytest.mark.parametrize("value", ["", "severe", None, 3])
def test_ranks_reject_unknown(value):
    with pytest.raises(ValueError):
        category_rank(value)
    with pytest.raises(ValueError):
        level_rank(value)


def test_default_levels_follow_the_taxonomy():
    assert risk.DEFAULT_LEVEL == {
        "read": "low",
        "write": "medium",
        "execute": "high",
        "destructive": "critical",
        "financial": "critical",
    }


# --- odd input --------------------------------------------------------------------------------------------------

ODD = [
    case(None, "execute", "high", id="None name"),
    case(12345, "execute", "high", id="int name"),
    case(b"delete_x", "execute", "high", id="bytes name"),
    case("🔥💾", "execute", "high", id="emoji name"),
    case("حذف_الملف", "execute", "high", id="arabic name"),
    case("x" * 100_000, "execute", "high", id="huge name"),
    case("delete_x", "destructive", "critical", description="a" * 1_000_000, id="huge description"),
    case("list_x", "read", "low", schema=[1, 2], id="list schema"),
    case("list_x", "read", "low", schema="{}", id="string schema"),
    case("list_x", "read", "low", schema={"properties": None}, id="properties None"),
    case("list_x", "read", "low", schema={"properties": ["confirm"]}, id="properties list"),
    case("list_x", "read", "low", schema=props(a=None, b=3, c="x"), id="property values not dicts"),
    case("list_x", "read", "low", schema=props(method={"enum": "DELETE"}), id="enum not a list"),
    case("list_x", "read", "low", schema=props(method={"enum": [None, 3, {"a": 1}]}), id="enum values odd"),
    case("list_x", "read", "medium", schema={"properties": {3: BOOL, "force": BOOL}}, id="non-string keys"),
    case("list_x", "read", "low", schema=props(**{"": BOOL}), id="empty key"),
]


@pytest.mark.parametrize(("name", "description", "schema", "annotations", "category", "level"), ODD)
def test_odd_input(name, description, schema, annotations, category, level):
    found = check(name, description, schema, annotations, category, level)
    assert found.reasons and not any("failed" in r for r in found.reasons)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
ANYTHING = st.one_of(JSON, st.text(), st.binary(max_size=10))
SCHEMA = st.one_of(
    ANYTHING,
    st.fixed_dictionaries({"properties": st.dictionaries(st.text(max_size=15), JSON, max_size=6)}),
)


@settings(max_examples=400, deadline=None)
@given(name=ANYTHING, description=ANYTHING, schema=SCHEMA, annotations=ANYTHING)
def test_total_on_any_input(name, description, schema, annotations):
    found = classify(name, description, schema, annotations)
    assert found.category in CATEGORIES
    assert found.level in LEVELS
    assert level_rank(found.level) >= level_rank(risk.DEFAULT_LEVEL[found.category])
    assert found.reasons and all(isinstance(r, str) for r in found.reasons)
    assert not any("classification failed" in r for r in found.reasons)


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=60))
def test_unicode_names_are_never_read_without_a_read_word(name):
    found = classify(name)
    if found.category == "read":
        assert any(r.startswith(("name verb", "name noun", "name mentions", "no verb in name")) for r in found.reasons)


def test_a_bug_fails_closed(monkeypatch):
    def boom(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(risk, "_classify", boom)
    found = classify("list_x")
    assert (found.category, found.level) == ("destructive", "critical")
    assert "classification failed (RuntimeError)" in found.reasons[0]


def test_classification_is_frozen():
    found = classify("list_x")
    with pytest.raises(AttributeError):
        found.category = "write"  # type: ignore[misc]
    assert isinstance(found.reasons, tuple)


# --- purity -----------------------------------------------------------------------------------------------------


def test_imports_only_the_standard_library():
    tree = ast.parse(RISK_SOURCE.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in gateway/policy/risk.py"
            modules.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("open", "__import__", "exec", "eval"), node.func.id
    assert modules, "no imports found?"
    foreign = {m for m in modules if m not in sys.stdlib_module_names and m != "__future__"}
    assert not foreign, f"non-standard-library imports: {foreign}"
    assert not modules & {"django", "mcp", "asyncio", "os", "io", "pathlib", "socket", "subprocess"}


# --- agreement with the TrueNAS reference data ------------------------------------------------------------------


def load_rows():
    with TSV.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


ROWS = load_rows()


def annotations_of(row, column):
    text = row[column].strip()
    return json.loads(text) if text else None


def agreement(column):
    """Classify every row (annotations from `column`, or none) and compare with the reference columns."""
    result = {"cat": 0, "lvl": 0, "pl_n": 0, "pl_cat": 0, "pl_lvl_n": 0, "pl_lvl": 0, "miss": [], "pl_miss": []}
    found_by_name = {}
    for row in ROWS:
        found = classify(row["name"], None, json.loads(row["params"]), annotations_of(row, column) if column else None)
        found_by_name[row["name"]] = found
        result["cat"] += found.category == row["category_guess"]
        result["lvl"] += found.level == row["risk_guess"]
        if found.category != row["category_guess"]:
            result["miss"].append((row["name"], found, f"{row['category_guess']}/{row['risk_guess']}"))
        observed = row["policylayer_observed"].strip().lower()
        if observed:
            category, _, level = observed.partition("/")
            result["pl_n"] += 1
            result["pl_cat"] += found.category == category
            if level:
                result["pl_lvl_n"] += 1
                result["pl_lvl"] += found.level == level
            if found.category != category or (level and found.level != level):
                result["pl_miss"].append((row["name"], found, row["policylayer_observed"]))
    result["by_name"] = found_by_name
    return result


def pct(part, whole):
    return 100.0 * part / whole if whole else 100.0


def report(title, result):
    n = len(ROWS)
    lines = [
        "",
        f"== risk classifier vs TrueNAS data: {title} ==",
        f"category vs category_guess       {result['cat']}/{n} = {pct(result['cat'], n):.1f} %",
        f"level    vs risk_guess           {result['lvl']}/{n} = {pct(result['lvl'], n):.1f} %",
        f"category vs policylayer_observed {result['pl_cat']}/{result['pl_n']}"
        f" = {pct(result['pl_cat'], result['pl_n']):.1f} %",
        f"level    vs policylayer_observed {result['pl_lvl']}/{result['pl_lvl_n']}"
        f" = {pct(result['pl_lvl'], result['pl_lvl_n']):.1f} %",
        "category disagreements with category_guess (ours vs theirs):",
    ]
    for name, found, theirs in result["miss"]:
        lines.append(f"  {name:40} {found.category}/{found.level:9} vs {theirs:22} {'; '.join(found.reasons)}")
    lines.append("disagreements with policylayer_observed (ours vs theirs):")
    for name, found, theirs in result["pl_miss"]:
        lines.append(f"  {name:40} {found.category}/{found.level:9} vs {theirs:22} {'; '.join(found.reasons)}")
    print("\n".join(lines))


def test_reference_data_is_complete():
    assert len(ROWS) == 279
    assert {row["category_guess"] for row in ROWS} <= set(CATEGORIES)
    assert {row["risk_guess"] for row in ROWS} <= set(LEVELS)
    assert sum(1 for row in ROWS if row["policylayer_observed"].strip()) == 45


def test_agreement_without_annotations():
    result = agreement(None)
    report("names and schemas, no annotations (as the real server)", result)
    n = len(ROWS)
    # Achieved when written: 96.8 % / 74.2 % / 100 % (45/45) / 91.9 % (34/37). Bars sit a little below.
    assert pct(result["cat"], n) >= 95.0
    assert pct(result["lvl"], n) >= 70.0
    assert pct(result["pl_cat"], result["pl_n"]) >= 95.0
    assert pct(result["pl_lvl"], result["pl_lvl_n"]) >= 88.0


def test_agreement_with_suggested_annotations():
    plain = agreement(None)
    result = agreement("annotations_suggested")
    report("with the annotations_suggested column as annotations", result)
    raised = 0
    for name, found in result["by_name"].items():
        before = plain["by_name"][name]
        assert category_rank(found.category) >= category_rank(before.category), name
        assert level_rank(found.level) >= level_rank(before.level), name
        raised += found != before
    print(f"annotations raised {raised} of {len(ROWS)} tools (none lowered)")
    # destructiveHint true is set on 58 writes and executes (MCP's broad "may overwrite" meaning), and the rule
    # says it raises to destructive, so category agreement drops. Achieved when written: 77.4 %.
    assert pct(result["cat"], len(ROWS)) >= 75.0


TRUENAS_HARD_CASES = [
    ("system_reboot", "destructive", "critical"),
    ("system_shutdown", "destructive", "critical"),
    ("pool_export", "destructive", "critical"),
    ("snapshot_rollback", "destructive", "critical"),
    ("disk_wipe", "destructive", "critical"),
    ("boot_detach_disk", "destructive", "critical"),
    ("pool_replace_disk", "destructive", "critical"),
    ("service_restart", "execute", "high"),
    ("cloud_backup_run", "execute", "high"),
    ("pool_scrub", "execute", "high"),
    ("truenas_api_call", "execute", "critical"),
    ("truenas", "execute", "critical"),
    ("cronjob_create", "write", "high"),
    ("user_set_password", "write", "high"),
    ("system_version", "read", "low"),
    ("cloud_backup_snapshots", "read", "low"),
    ("nfs_client_count", "read", "low"),
    ("cloudsync_credentials_list", "read", "medium"),
    ("disk_smart_test_list", "read", "low"),
]


@pytest.mark.parametrize(("name", "category", "level"), TRUENAS_HARD_CASES, ids=[c[0] for c in TRUENAS_HARD_CASES])
def test_truenas_hard_cases(name, category, level):
    row = next(row for row in ROWS if row["name"] == name)
    found = classify(name, None, json.loads(row["params"]), None)
    assert (found.category, found.level) == (category, level), found.reasons


def test_no_truenas_tool_name_in_the_rules():
    """The rules are general words: no TrueNAS tool name (with an underscore) appears in gateway/policy/risk.py."""
    source = RISK_SOURCE.read_text(encoding="utf-8")
    named = [row["name"] for row in ROWS if "_" in row["name"] and row["name"] in source]
    assert not named



@pytest.mark.parametrize(("kept", "new", "expected"), [
    (("destructive", "critical"), ("read", "low"), ("destructive", "critical")),
    (("read", "low"), ("destructive", "critical"), ("destructive", "critical")),
    (("write", "critical"), ("execute", "high"), ("execute", "critical")),
    (("read", "low"), ("read", "low"), ("read", "low")),
], ids=["lowered-is-kept", "raised-at-once", "each-axis-on-its-own", "same"])
def test_the_more_severe_takes_category_and_level_each_at_their_highest(kept, new, expected):
    from gateway.policy.risk import Classification, the_more_severe

    out = the_more_severe(Classification(*kept, ("k",)), Classification(*new, ("n",)))
    assert (out.category, out.level) == expected
    assert ("kept until a person approves" in out.reasons[-1]) == (expected != new)
