"""The audit log's hash chains written by two real gateway processes at once (the suite's database: PostgreSQL in
CI), with rows archived under the writers' feet: every chain verifies, table and archives together; a row then
inserted directly is found. Processes of their own: a process's chains go on from where it was, and the table is
emptied between tests, so a process that served an earlier test would rightly show its first rows missing."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway.calls import audit_archive
from gateway.models import AuditChain, Call
from tests.conftest import stop
from tests.e2e.test_evidence import calls_through, register_nas, two_gateways

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fresh_gateways(django_db_setup, tmp_path_factory):
    # The processes of earlier modules may have anchored their chains after the table was last emptied.
    AuditChain.objects.all().delete()
    running = two_gateways(tmp_path_factory)
    yield running
    for gateway in running:
        stop(gateway.proc)


def test_chains_of_concurrent_writers_verify_and_survive_archiving(fresh_gateways, tmp_path, settings):
    gateways, token = fresh_gateways, register_nas()
    plan = [("system_info", {}), ("dataset_delete", {"name": "tank/x"}), ("no_such_tool", {})] * 5
    settings.PORTCULLIS_AUDIT_ARCHIVE_DIR = tmp_path

    async def run():
        modes = ("legacy", "auto", "legacy", "auto")
        agents = [calls_through(gw, token, mode, plan) for gw in gateways for mode in modes]
        loop = asyncio.get_running_loop()
        archived = 0
        calling = asyncio.gather(*agents)
        while not calling.done():  # archive everything settled so far while the writers go on
            archived += await loop.run_in_executor(None, archive_now)
            await asyncio.sleep(0.2)
        await calling
        return archived

    archived = asyncio.run(asyncio.wait_for(run(), 180))
    time.sleep(2.5)  # both processes' heartbeats anchor their chains' heads
    archived += archive_now()
    out = io.StringIO()
    call_command("verify_audit", "--archive", str(tmp_path), stdout=out)
    total = len(plan) * 8
    assert f", {archived} archived rows" in out.getvalue() and archived > 0
    writers = set(AuditChain.objects.values_list("worker", flat=True))
    assert len(writers) == 2  # each process writes its own chains (one per database thread)
    assert Call.objects.count() + archived == total

    # Now a row is altered in the database: found.
    Call.objects.create(server_slug="nas", tool_name="system_info", decision="allow", outcome="ok")
    err = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_audit", "--archive", str(tmp_path), stdout=io.StringIO(), stderr=err)
    assert "has no place in any chain: it was inserted" in err.getvalue()


def archive_now() -> int:
    from django.conf import settings
    from django.db import connection

    try:
        return audit_archive.archive_before(timezone.now(), settings.PORTCULLIS_AUDIT_ARCHIVE_DIR, timezone.now())
    finally:
        connection.close()
