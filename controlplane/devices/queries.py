"""Who may see which devices: one helper per access rule, never ad hoc filters in views."""
from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet

from controlplane.devices.credentials import digest
from controlplane.devices.models import Device, EnrolmentToken, offline_cutoff


def _with_running_jobs(devices: QuerySet[Device]) -> QuerySet[Device]:
    return devices.annotate(running_jobs=Count("jobs", filter=Q(jobs__state="running")))


def devices_for(user) -> QuerySet[Device]:
    """The devices ``user`` owns (nothing for anonymous users), with their busy state."""
    if not user.is_authenticated:
        return Device.objects.none()
    return _with_running_jobs(Device.objects.filter(owner=user)).order_by("name")


def with_job_summaries(devices: QuerySet[Device]) -> QuerySet[Device]:
    """``devices`` with what a list of them shows, fetched in two queries for the whole page
    rather than two per device: ``queued_jobs`` (a count) and ``running_job_rows`` (the jobs
    running there, oldest first, with their run and experiment)."""
    jobs = Device._meta.get_field("jobs").related_model  # experiments.Job, without the import
    running = (jobs.objects.filter(state="running").select_related("run__experiment")
               .order_by("started_at"))
    return devices.annotate(queued_jobs=Count("jobs", filter=Q(jobs__state="queued"),
                                              distinct=True)) \
        .prefetch_related(Prefetch("jobs", queryset=running, to_attr="running_job_rows"))


def online_devices_for(user) -> QuerySet[Device]:
    """``user``'s devices that heartbeated recently enough to count as online (or busy)."""
    return devices_for(user).filter(last_seen__gte=offline_cutoff())


def device_by_credential(credential: str) -> Device | None:
    """The device whose credential this is, or None."""
    # Raw SQL: every agent request reads this row, and the ORM took longer to build the query
    # than the database to answer it (issue #20); the columns are still converted as the ORM's.
    found = list(Device.objects.raw(
        f"SELECT * FROM {Device._meta.db_table} WHERE credential_hash = %s", [digest(credential)]))
    return found[0] if found else None


def enrolment_tokens_for(user) -> QuerySet[EnrolmentToken]:
    """The enrolment tokens ``user`` issued (nothing for anonymous users), newest first."""
    if not user.is_authenticated:
        return EnrolmentToken.objects.none()
    return (EnrolmentToken.objects.filter(owner=user).select_related("replaces")
            .order_by("-created"))
