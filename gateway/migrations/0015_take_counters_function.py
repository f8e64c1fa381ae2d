"""PostgreSQL: portcullis_take_counters(), which takes several rate-limit counters all or none, so that a call with
more than one counter is counted and audited in one statement (gateway/calls/ratelimit.py). SQLite: nothing."""

from django.db import migrations

# The keys come sorted (two calls never wait on each other's rows in opposite orders). Each counter is taken with
# the same conditional upsert as a single one (ratelimit.RESERVE_SQL). The block with an EXCEPTION clause is a
# subtransaction: a full counter rolls back the ones taken before it. Returns 0 when every counter was taken, else
# the 1-based place of the first full one.
CREATE = """
CREATE OR REPLACE FUNCTION portcullis_take_counters(keys text[], window_ends bigint[], maxes integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    full_at integer := 0;
BEGIN
    BEGIN
        FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
            INSERT INTO gateway_counter AS c (key, n, window_end) VALUES (keys[i], 1, window_ends[i])
                ON CONFLICT (key) DO UPDATE SET n = c.n + 1 WHERE c.n < maxes[i];
            IF NOT FOUND THEN
                full_at := i;
                RAISE EXCEPTION USING ERRCODE = 'PCFUL';
            END IF;
        END LOOP;
    EXCEPTION WHEN SQLSTATE 'PCFUL' THEN
        RETURN full_at;
    END;
    RETURN 0;
END
$$
"""
DROP = "DROP FUNCTION IF EXISTS portcullis_take_counters(text[], bigint[], integer[])"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0014_call_tasks'),
    ]

    operations = [
        migrations.RunPython(create, drop),
    ]
