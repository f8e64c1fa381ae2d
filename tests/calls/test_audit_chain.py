"""The audit log's hash chains (gateway/calls/audit_chain.py): `verify_audit` passes on a clean log and reports the
first altered, deleted, inserted or reordered row — rows changed directly in the database (SQLite here, PostgreSQL
in CI), as someone with database access but without the audit key would; the chain survives archiving."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from gateway import calls, policies
from gateway.calls import audit, audit_archive, audit_chain
from gateway.catalogue.sync import sync_tools
from gateway.models import AuditChain, Call

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = {"version": "1", "default": "deny",
          "tools": {"write_file": {"limits": [{"counter": "w", "window": "hour", "max": 3}]},
                    "delete_file": {"action": "approve"}}}


@pytest.fixture(autouse=True)
def fresh_chains():
    """Each test starts with an empty table, so this process's writers start new chains too."""
    audit_chain._local.head = None
    audit_chain._heads.clear()
    yield
    audit_chain._local.head = None
    audit_chain._heads.clear()


@pytest.fixture
def log(server, grant_that_may):
    """Twelve rows of every kind: allowed and settled ok or failed, refused by policy and by a limit, held."""
    sync_tools(server, [{"name": n, "inputSchema": {"type": "object"}}
                        for n in ("write_file", "delete_file", "read_secret")], timezone.now())
    policies.apply(server, POLICY, actor="test")
    token, now = grant_that_may.token, timezone.now()
    for n in range(4):  # the fourth is over the limit
        admission = calls.admit(token, server, "write_file", {"path": f"/a{n}", "token": "sk-secret"}, now)
        if admission.forward:
            calls.settle(admission, outcome="ok" if n else "tool_error", latency_ms=1.5 + n, result_size=10,
                         error="" if n else "disk full", now=now)
    for n in range(4):
        calls.admit(token, server, "read_secret", {"n": n}, now)
    for n in range(4):
        calls.admit(token, server, "delete_file", {"path": f"/d{n}"}, now)
    audit_chain.anchor("test", timezone.now())
    return list(Call.objects.order_by("chain", "seq").values_list("id", flat=True))


def verify(*args: str) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", "--no-archive", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code), err.getvalue()
    return 0, out.getvalue()


def sql(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_a_clean_log_verifies(log):
    assert len(log) == 12 and Call.objects.exclude(digest="").count() == 12
    code, text = verify()
    assert code == 0, text
    assert "12 rows in 1 chains" in text
    assert set(Call.objects.values_list("seq", flat=True)) == set(range(1, 13))
    assert not Call.objects.exclude(outcome="pending").filter(outcome_digest="").exists()


def test_the_outcome_written_later_keeps_the_chain(log):
    held = Call.objects.filter(tool_name="delete_file").first()
    calls.admission.refuse_held(calls.admission.Admission(held.pk, False, "", (), None), "approval",
                                "denied by alice", timezone.now())
    assert Call.objects.get(pk=held.pk).outcome == "refused"
    assert verify()[0] == 0


@pytest.mark.parametrize("column, value", [
    ("arguments", '{"path": "/etc/shadow"}'), ("tool_name", "read_file"), ("decision", "allow"),
    ("created_at", None), ("grant_name", "someone-else"), ("counters", '["other"]'),
])
def test_an_altered_admission_is_found(log, column, value):
    target = log[5]
    if column == "created_at":
        sql("UPDATE gateway_call SET created_at = %s WHERE id = %s", [timezone.now() - timedelta(days=1), target])
    else:
        sql(f"UPDATE gateway_call SET {column} = %s WHERE id = %s",  # noqa: S608 - a test's own column names
            [value, target])
    code, text = verify()
    assert code == 1
    assert f"call #{target} was altered" in text


@pytest.mark.parametrize("column, value", [("outcome", "ok"), ("error", ""), ("latency_ms", 0.1),
                                           ("reason", "allowed")])
def test_an_altered_outcome_is_found(log, column, value):
    target = Call.objects.get(tool_name="write_file", outcome="tool_error").pk
    sql(f"UPDATE gateway_call SET {column} = %s WHERE id = %s",  # noqa: S608 - a test's own column names
            [value, target])
    code, text = verify()
    assert code == 1 and f"call #{target}'s outcome was altered" in text


def test_a_settled_call_put_back_in_flight_is_found(log):
    target = Call.objects.get(tool_name="write_file", outcome="tool_error").pk
    sql("UPDATE gateway_call SET outcome = 'pending' WHERE id = %s", [target])
    assert f"call #{target}'s outcome was altered" in verify()[1]


def test_a_deleted_row_is_found(log):
    sql("DELETE FROM gateway_call WHERE id = %s", [log[4]])
    code, text = verify()
    assert code == 1
    assert "position 5 of chain" in text and "missing after call" in text and "rows were deleted" in text


def test_rows_deleted_from_the_end_are_found_by_the_anchor(log):
    sql("DELETE FROM gateway_call WHERE id IN (%s, %s)", [log[-1], log[-2]])
    code, text = verify()
    assert code == 1 and "ends at position 10 but its writer reported position 12" in text


def test_a_whole_chain_deleted_is_found(log):
    sql("DELETE FROM gateway_call", [])
    code, text = verify()
    assert code == 1 and "reached position 12 but none of its rows" in text


def test_an_inserted_copy_is_found(log):
    columns = [f.column for f in Call._meta.concrete_fields if f.column != "id"]
    sql(f"INSERT INTO gateway_call ({', '.join(columns)}) "  # noqa: S608 - the model's own column names
        f"SELECT {', '.join(columns)} FROM gateway_call WHERE id = %s",
        [log[3]])
    code, text = verify()
    assert code == 1 and "repeats position 4" in text


@pytest.mark.parametrize("how", ["unchained", "forged"])
def test_an_inserted_row_is_found(log, how):
    row = Call.objects.get(pk=log[0])
    row.pk, row.tool_name = None, "dataset_delete"
    if how == "unchained":
        row.chain, row.seq, row.digest = "", None, ""
    else:  # a new last link whose digest is computed without the key
        row.seq, row.digest = 13, "0" * 64
    row.save()
    code, text = verify()
    assert code == 1
    assert (f"call #{row.pk} has no place in any chain" in text if how == "unchained"
            else f"call #{row.pk} was altered" in text)


def test_reordered_rows_are_found(log):
    first, second = log[2], log[3]
    sql("UPDATE gateway_call SET seq = -seq WHERE id IN (%s, %s)", [first, second])
    sql("UPDATE gateway_call SET seq = 4 WHERE id = %s", [first])
    sql("UPDATE gateway_call SET seq = 3 WHERE id = %s", [second])
    code, text = verify()
    assert code == 1 and f"call #{second} is at position 3" in text and "written at position 4" in text


def test_a_chain_written_with_another_key_says_so(log, settings):
    settings.PORTCULLIS_AUDIT_KEY = "another key"
    code, text = verify()
    assert code == 1 and "written with another audit key" in text


def test_archiving_keeps_the_chain_verifiable(server, grant_that_may, tmp_path, settings):
    sync_tools(server, [{"name": "write_file", "inputSchema": {"type": "object"}}], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"write_file": {}}}, actor="test")
    now = timezone.now()
    for n in range(30):  # 20 rows from 40 days ago, then 10 from today
        at = now - timedelta(days=40) + timedelta(minutes=n) if n < 20 else now
        admission = calls.admit(grant_that_may.token, server, "write_file", {"n": n}, at)
        calls.settle(admission, outcome="ok", latency_ms=1.0, result_size=1, error="", now=at)
    audit_chain.anchor("test", now)
    settings.PORTCULLIS_AUDIT_RETENTION_DAYS = 30
    settings.PORTCULLIS_AUDIT_ARCHIVE_DIR = tmp_path
    assert audit_archive.archive_due(now) == 20
    assert Call.objects.count() == 10 and audit_archive.archive_due(now) == 0
    files = list(tmp_path.glob("calls-*.jsonl.gz"))
    assert len(files) == 1 and oct(files[0].stat().st_mode)[-3:] == "600"
    header, rows = json.loads(gzip.open(files[0]).readline()), gzip.open(files[0]).read().splitlines()[1:]
    assert header["rows"] == 20 and len(rows) == 20 and list(header["chains"].values())[0]["after_seq"] == 0
    assert AuditChain.objects.get(id=json.loads(rows[0])["chain"]).archived_seq == 20

    out = StringIO()
    call_command("verify_audit", "--archive", str(tmp_path), stdout=out)
    assert "30 rows" not in out.getvalue() and "10 rows in 1 chains, 20 archived rows" in out.getvalue()
    assert verify()[0] == 0  # the table alone verifies from the archive's anchor

    # An archived row altered, and an archive missing, are found.
    lines = gzip.open(files[0]).read().decode().splitlines()
    altered = json.loads(lines[7])
    altered["tool_name"] = "dataset_delete"
    lines[7] = json.dumps(altered)
    with gzip.open(files[0], "wt") as out_file:
        out_file.write("\n".join(lines) + "\n")
    err = StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_audit", "--archive", str(tmp_path), stdout=StringIO(), stderr=err)
    assert f"call #{altered['id']} in {files[0].name} was altered" in err.getvalue()
    files[0].unlink()
    err = StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_audit", "--archive", str(tmp_path), stdout=StringIO(), stderr=err)
    assert "the archives end at position 0 but the table continues after position 20" in err.getvalue()


def test_a_chain_archived_before_any_heartbeat_anchored_it_keeps_its_writers_name(server, grant_that_may, tmp_path):
    sync_tools(server, [{"name": "write_file", "inputSchema": {"type": "object"}}], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"write_file": {}}}, actor="test")
    old = timezone.now() - timedelta(days=40)
    for n in range(3):
        admission = calls.admit(grant_that_may.token, server, "write_file", {"n": n}, old)
        calls.settle(admission, outcome="ok", latency_ms=1.0, result_size=1, error="", now=old)
    assert not AuditChain.objects.exists()  # no heartbeat yet
    assert audit_archive.archive_before(old + timedelta(days=1), tmp_path, timezone.now()) == 3
    assert list(AuditChain.objects.values_list("worker", flat=True)) == [audit.WORKER_ID]


def test_a_pending_row_holds_back_archiving_of_its_chain(server, grant_that_may, tmp_path, settings):
    sync_tools(server, [{"name": "write_file", "inputSchema": {"type": "object"}}], timezone.now())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"write_file": {}}}, actor="test")
    old = timezone.now() - timedelta(days=40)
    admitted = [calls.admit(grant_that_may.token, server, "write_file", {"n": n}, old) for n in range(5)]
    for admission in admitted[:2] + admitted[3:]:
        calls.settle(admission, outcome="ok", latency_ms=1.0, result_size=1, error="", now=old)
    assert audit_archive.archive_before(old + timedelta(days=1), tmp_path, timezone.now()) == 2
    assert sorted(Call.objects.values_list("seq", flat=True)) == [3, 4, 5]
    assert verify()[0] == 0


def test_long_chains_are_checked_in_chunks_across_their_boundaries(log, monkeypatch):
    from gateway.calls import audit_verify

    monkeypatch.setattr(audit_verify, "CHUNK", 5)
    assert verify()[0] == 0
    sql("DELETE FROM gateway_call WHERE id = %s", [log[5]])  # the first row of the second chunk
    code, text = verify()
    assert code == 1 and "position 6 of chain" in text and "rows were deleted" in text


def test_outcomes_settled_together_are_each_rows_own_sealed_and_counted(server, grant_that_may):
    """Calls that ended together are settled together (dbthreads.Batch → settle_many, one commit): each row gets its
    own outcome, error, size, time and outcome digest, and each is counted once."""
    from gateway.telemetry import metrics

    sync_tools(server, [{"name": "write_file", "inputSchema": {"type": "object"}}], timezone.now())
    policies.apply(server, {"version": "1", "default": "allow"}, actor="test")
    now = timezone.now()
    admissions = [calls.admit(grant_that_may.token, server, "write_file", {"n": n}, now) for n in range(4)]
    assert all(a.forward for a in admissions)
    later = now + timedelta(seconds=2)
    outcomes = [("ok", 1.5, 10, ""), ("tool_error", 2.5, None, "disk full sk-live-0123456789abcdef"),
                ("timeout", 30000.0, None, "no answer\x00"), ("ok", 0.25, 2**31 - 1, "")]
    counted = metrics.CALLS.labels(server.slug, "write_file", "allow", "ok")._value.get()
    calls.admission.settle_many([(a, {"outcome": o, "latency_ms": ms, "result_size": size, "error": error,
                                      "now": later + timedelta(milliseconds=n)})
                                 for n, (a, (o, ms, size, error)) in enumerate(zip(admissions, outcomes, strict=True))])
    rows = {r.pk: r for r in Call.objects.filter(pk__in=[a.call_id for a in admissions])}
    for n, (admission, (outcome, ms, size, _)) in enumerate(zip(admissions, outcomes, strict=True)):
        row = rows[admission.call_id]
        assert (row.outcome, row.latency_ms, row.result_size) == (outcome, ms, size)
        assert row.finished_at == later + timedelta(milliseconds=n)
        assert row.outcome_digest
    assert rows[admissions[1].call_id].error == "disk full [REDACTED]"
    assert rows[admissions[2].call_id].error == "no answer\\u0000"
    assert metrics.CALLS.labels(server.slug, "write_file", "allow", "ok")._value.get() == counted + 2
    code, text = verify()
    assert code == 0, text
    # all of one batch without a size: the array of sizes is all NULL
    more = [calls.admit(grant_that_may.token, server, "write_file", {"n": n}, now) for n in range(2)]
    calls.admission.settle_many([(a, {"outcome": "timeout", "latency_ms": 1.0, "result_size": None, "error": "late",
                                      "now": later}) for a in more])
    assert list(Call.objects.filter(pk__in=[a.call_id for a in more]).values_list("outcome", "result_size")) == [
        ("timeout", None), ("timeout", None)]
    assert verify()[0] == 0
