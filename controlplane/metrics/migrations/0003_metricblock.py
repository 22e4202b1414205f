"""MetricBlock: per-block extremes of each series, kept at ingestion (issue #20: a run of a
million points opens in under 2 s); filled here from the points already stored."""
import django.db.models.deletion
from django.db import migrations, models


def fill_blocks(apps, schema_editor):
    # The helper reads and writes the tables by name with raw SQL: no model class involved.
    from controlplane.metrics import blocks

    blocks.rebuild(connection=schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('experiments', '0004_distributed_runs_jobs_per_rank'),
        ('metrics', '0002_runlog_seq'),
    ]

    operations = [
        migrations.CreateModel(
            name='MetricBlock',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('block', models.BigIntegerField()),
                ('count', models.IntegerField()),
                ('first_step', models.BigIntegerField()),
                ('last_step', models.BigIntegerField()),
                ('min_step', models.BigIntegerField()),
                ('min_value', models.FloatField()),
                ('min_sim_time_s', models.FloatField()),
                ('min_wall_time_s', models.FloatField()),
                ('max_step', models.BigIntegerField()),
                ('max_value', models.FloatField()),
                ('max_sim_time_s', models.FloatField()),
                ('max_wall_time_s', models.FloatField()),
                ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='blocks', to='experiments.run')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('run', 'name', 'block'), name='metric_block_unique')],
            },
        ),
        migrations.RunPython(fill_blocks, migrations.RunPython.noop),
    ]
