"""The list caches' change log (controlplane.experiments.reads): database triggers append a
ReadChange row for every write that can change a list of experiments or runs.

What counts: any insert, update or delete of an experiment or run; of a job, any but an update
of ``listed_at`` alone (every heartbeat of a device running jobs writes it; lists never show
it); of a device, a change of its name or its agent's worker state, or its deletion (a
heartbeat's ``last_seen`` is time-dependent state the caches check for themselves). A column
added later to Job must be added to ``JOB_COLUMNS`` by a migration that recreates the trigger
(tests/controlplane/experiments/test_reads.py fails until it is). On SQLite, Django rebuilds a
table for most schema changes, which drops its triggers: a later migration that alters one of
these four tables must run ``create_triggers`` again (the same test fails until it does).
"""
import uuid

from django.core.exceptions import ImproperlyConfigured
from django.db import migrations, models

CHANGE = "INSERT INTO experiments_readchange DEFAULT VALUES"
SQLITE_CHANGE = "INSERT INTO experiments_readchange (id) VALUES (NULL)"  # no DEFAULT VALUES in a trigger
JOB_COLUMNS = ("run_id", "rank", "device_id", "celery_task_id", "state", "queued_at",
               "dispatched_at", "started_at", "finished_at", "error")
DEVICE_COLUMNS = ("name", "worker_consuming", "worker_detail")
# (trigger name, table, event[, WHEN condition])
TRIGGERS = [
    *[(f"estuary_reads_{short}_{event.split()[0].lower()}", table, event)
      for short, table in (("experiment", "experiments_experiment"), ("run", "experiments_run"))
      for event in ("INSERT", "UPDATE", "DELETE")],
    ("estuary_reads_job_insert", "experiments_job", "INSERT"),
    ("estuary_reads_job_update", "experiments_job", f"UPDATE OF {', '.join(JOB_COLUMNS)}"),
    ("estuary_reads_job_delete", "experiments_job", "DELETE"),
    ("estuary_reads_device_update", "devices_device", "UPDATE",
     " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in DEVICE_COLUMNS)),
    ("estuary_reads_device_delete", "devices_device", "DELETE"),
]


def create_triggers(apps, schema_editor):
    """Create the triggers (those that exist are kept or replaced: safe to run again)."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            "CREATE OR REPLACE FUNCTION estuary_reads_changed() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {CHANGE}; RETURN NULL; END $$")
    for name, table, event, *condition in TRIGGERS:
        if vendor == "postgresql":
            # A row trigger only where a condition needs the row; else one row per statement.
            level = "ROW" if condition else "STATEMENT"
            when = f" WHEN ({condition[0]})" if condition else ""
            schema_editor.execute(
                f"CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {table} FOR EACH {level}{when} "
                "EXECUTE FUNCTION estuary_reads_changed()")
        elif vendor == "sqlite":
            when = f" WHEN {condition[0].replace('IS DISTINCT FROM', 'IS NOT')}" if condition else ""
            schema_editor.execute(
                f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} FOR EACH ROW{when} "
                f"BEGIN {SQLITE_CHANGE}; END")
        else:
            raise ImproperlyConfigured(f"No list-cache triggers for the {vendor} database: "
                                       "Estuary supports PostgreSQL and SQLite.")


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for name, table, *_ in TRIGGERS:
        on = f" ON {table}" if vendor == "postgresql" else ""
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}{on}")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS estuary_reads_changed()")


class Migration(migrations.Migration):

    dependencies = [
        ('devices', '0006_device_resources'),
        ('experiments', '0004_distributed_runs_jobs_per_rank'),
    ]

    operations = [
        migrations.CreateModel(
            name='ReadChange',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
            ],
        ),
        migrations.CreateModel(
            name='ReadChangeFold',
            fields=[
                ('id', models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ('epoch', models.UUIDField(default=uuid.uuid4)),
                ('folded', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
