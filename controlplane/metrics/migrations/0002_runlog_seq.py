"""Number log lines per run (``RunLog.seq``) so log ingestion is idempotent like metrics.

Lines stored before numbering get 0, 1, ... per run in arrival (id) order.
"""
from django.db import migrations, models


def number_existing_lines(apps, schema_editor):
    RunLog = apps.get_model("metrics", "RunLog")
    next_seq: dict = {}
    for row in RunLog.objects.order_by("run_id", "id").only("id", "run_id").iterator():
        seq = next_seq.get(row.run_id, 0)
        RunLog.objects.filter(pk=row.pk).update(seq=seq)
        next_seq[row.run_id] = seq + 1


class Migration(migrations.Migration):

    dependencies = [
        ("metrics", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="runlog",
            name="seq",
            field=models.BigIntegerField(null=True),
        ),
        migrations.RunPython(number_existing_lines, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="runlog",
            name="seq",
            field=models.BigIntegerField(help_text="The agent's number for this line, from 0"),
        ),
        migrations.AddConstraint(
            model_name="runlog",
            constraint=models.UniqueConstraint(fields=("run", "seq"), name="run_log_unique_seq"),
        ),
    ]
