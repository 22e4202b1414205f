"""Ingestion of what agents report: metric points and log lines."""
from __future__ import annotations

from typing import Any

from django.db import transaction

from controlplane.experiments.models import Run
from controlplane.metrics.events import log_event, points_event, publish_on_commit
from controlplane.metrics.models import MetricPoint, RunLog


@transaction.atomic
def ingest_metrics(run: Run, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store a batch of validated points; return the ones that were new.

    Idempotent on (run, name, step): a point already stored (a retried batch, or the same key
    twice in one batch) is skipped, first value wins. Only new points are published, so the
    live view never sees one twice.
    """
    batch: dict[tuple[str, int], dict[str, Any]] = {}
    for point in points:
        batch.setdefault((point["name"], point["step"]), point)
    if not batch:
        return []
    stored = set(MetricPoint.objects.filter(
        run=run, name__in={name for name, _ in batch}, step__in={step for _, step in batch},
    ).values_list("name", "step"))
    new = [point for key, point in batch.items() if key not in stored]
    MetricPoint.objects.bulk_create([MetricPoint(run=run, **point) for point in new],
                                    ignore_conflicts=True, batch_size=1000)
    if new:
        publish_on_commit(run.experiment_id, points_event(run.id, new))
    return new


@transaction.atomic
def append_logs(run: Run, first_seq: int, lines: list[str]) -> list[str]:
    """Store lines ``first_seq``, ``first_seq + 1``, ... of the run's log; return the new ones.

    Idempotent on (run, seq) like metrics: lines already stored (a retried batch) are skipped,
    and only new lines are published.
    """
    if not lines:
        return []
    seqs = range(first_seq, first_seq + len(lines))
    stored = set(RunLog.objects.filter(run=run, seq__range=(seqs[0], seqs[-1]))
                 .values_list("seq", flat=True))
    new = [(seq, line) for seq, line in zip(seqs, lines) if seq not in stored]
    RunLog.objects.bulk_create([RunLog(run=run, seq=seq, line=line) for seq, line in new],
                               ignore_conflicts=True)
    if new:
        publish_on_commit(run.experiment_id, log_event(run.id, [line for _, line in new]))
    return [line for _, line in new]
