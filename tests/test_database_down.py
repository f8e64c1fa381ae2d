"""A tools/call while the database (the audit log) fails: refused with a reason the agent can act on, never
forwarded."""

from __future__ import annotations

import pytest


@pytest.mark.django_db(transaction=True)
def test_a_call_while_the_database_fails_is_refused_with_a_reason_and_not_forwarded(server, grant_that_may):
    """No audit row can be written, so nothing is forwarded; the agent reads why and what to do."""
    from django.db import connection

    from gateway import relay
    from gateway.models import Grant

    table = Grant._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO portcullis_unreachable")  # noqa: S608 - a model's table
    try:
        admission = relay._admit(grant_that_may.token, server, "read_file", {}, None)
    finally:
        connection.close()  # the failed statement may have left the connection unusable (PostgreSQL)
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE portcullis_unreachable RENAME TO {table}")  # noqa: S608
    assert not admission.forward and admission.call_id is None
    assert admission.message.startswith("audit log unavailable (")
    assert "not forwarded; try again shortly" in admission.message
