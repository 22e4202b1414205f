"""Live events about runs, sent to the experiment's Channels group."""
from __future__ import annotations

import uuid
from typing import Any

from controlplane.experiments.models import Run
from controlplane.experiments.serializers import RunSerializer
from controlplane.metrics.events import plain_json


def run_event(run_id: uuid.UUID) -> dict[str, Any]:
    """``{"type": "run", "run": {...}, "experiment": {"id", "status"}}`` as committed now."""
    run = (Run.objects.select_related("experiment").prefetch_related("jobs__device")
           .get(pk=run_id))
    return {
        "type": "run",
        "run": plain_json(RunSerializer(run).data),
        "experiment": {"id": str(run.experiment_id), "status": run.experiment.status},
    }
