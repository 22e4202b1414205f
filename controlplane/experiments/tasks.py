"""The control plane's own Celery tasks (queue ``controlplane``, run by beat)."""
from celery import shared_task
from django.conf import settings

from controlplane.experiments import actions


@shared_task(name="experiments.reap_stale_jobs", ignore_result=True)
def reap_stale_jobs() -> list[str]:
    """Fail the jobs whose device missed its heartbeats or whose gang missed its claim
    deadline (every REAPER_INTERVAL_S), try to allocate the waiting gangs, then touch the
    worker's progress mark (``ESTUARY["REAPER_MARK"]``), which its supervisor watches."""
    failed = [str(job_id) for job_id in actions.reap_stale_jobs()]
    actions.allocate_gangs()
    settings.ESTUARY["REAPER_MARK"].touch()
    return failed
