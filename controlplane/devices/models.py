"""Device (an enrolled agent and the profile it is emulated with) and EnrolmentToken."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.celery import device_queue
from ml.testbed.profiles import PROFILES


def offline_cutoff(now: datetime | None = None) -> datetime:
    """Devices last seen before this instant missed the allowed heartbeats: offline.

    Only heartbeats missed while the control plane was accepting them count (see
    :class:`ServerUptime`): silence during a server outage is not held against devices, and
    after the server comes back they get one full missed-heartbeats window (the grace) to
    report again. A device silent for a window before the outage stays offline.
    """
    knobs = settings.ESTUARY
    silence = timedelta(seconds=knobs["HEARTBEAT_INTERVAL_S"] * knobs["MISSED_HEARTBEATS"])
    now = now or timezone.now()
    uptime = ServerUptime.read()
    if uptime is None:  # no server has marked itself (in-process use): count all silence
        return now - silence
    end = min(now, uptime.seen_at) if uptime.is_down(now) else now
    if uptime.down_since < uptime.up_since and end - uptime.up_since < silence:
        return uptime.down_since - silence  # the grace: judge by what came before the outage
    return end - silence


class ServerUptime(models.Model):
    """When the web servers accepted requests: one row, marked by every ASGI process every half
    heartbeat interval (controlplane/devices/uptime.py). No mark for a heartbeat interval means
    no server is accepting, so agents cannot heartbeat and their silence does not count.
    """

    ROW = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=ROW, editable=False)
    up_since = models.DateTimeField(help_text="Start of the current accepting period")
    seen_at = models.DateTimeField(help_text="Latest mark of a server")
    down_since = models.DateTimeField(
        help_text="End of the accepting period before the last outage (up_since if none)")

    @classmethod
    def read(cls) -> "ServerUptime | None":
        """The row, or None before any server marked itself. Raw SQL: the ORM took longer to
        build this one-row query than the database to answer it, and every list page whose
        queued jobs wait on devices reads it (issue #20)."""
        rows = list(cls.objects.raw(f"SELECT * FROM {cls._meta.db_table} WHERE id = %s",
                                    [cls.ROW]))
        return rows[0] if rows else None

    @staticmethod
    def allowed_gap() -> timedelta:
        """Longer than this between marks is an outage."""
        return timedelta(seconds=settings.ESTUARY["HEARTBEAT_INTERVAL_S"])

    def is_down(self, now: datetime) -> bool:
        return now - self.seen_at > self.allowed_gap()

    def __str__(self) -> str:
        return f"servers accepting since {self.up_since:%Y-%m-%d %H:%M:%S}"


class Device(models.Model):
    """A machine running an agent. Its profile fields are what the emulated testbed uses."""

    class Kind(models.TextChoices):
        EDGE = "edge"
        CLOUD = "cloud"

    class Status(models.TextChoices):
        ONLINE = "online"
        BUSY = "busy"
        #: Heartbeating, but its agent says it does not take jobs (e.g. the broker is down).
        DEGRADED = "degraded"
        OFFLINE = "offline"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="devices")
    # Unique per owner (Meta), not across tenants: a global rule would tell one tenant which
    # names another uses, and let it squat the names another's agents need.
    name = models.CharField(max_length=63)
    kind = models.CharField(max_length=5, choices=Kind.choices)
    profile_name = models.CharField(max_length=63, help_text="Catalogue profile it started from")
    compute_gflops = models.FloatField(help_text="Effective GFLOP/s")
    memory_mib = models.PositiveIntegerField()
    uplink_mbps = models.FloatField()
    downlink_mbps = models.FloatField()
    rtt_ms = models.FloatField()
    accelerator = models.CharField(max_length=100, blank=True)
    credential_hash = models.CharField(max_length=64, unique=True, editable=False)
    last_seen = models.DateTimeField(null=True, blank=True)
    worker_consuming = models.BooleanField(
        default=True, help_text="Its agent's last heartbeat said it takes jobs from its queue")
    worker_detail = models.CharField(max_length=500, blank=True,
                                     help_text="Why not, as its agent said")
    advertise_address = models.CharField(
        max_length=255, blank=True,
        help_text="Where the other agents of a distributed run reach this one (its agent's "
                  "--advertise-address, reported at enrolment and with each heartbeat)")
    resources = models.JSONField(
        default=dict, blank=True,
        help_text="CPU, memory and GPU use its agent's last heartbeat reported")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="device_name_unique_per_owner"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """The Celery queue its agent consumes."""
        return device_queue(self.id)

    def is_online(self, cutoff: datetime | None = None) -> bool:
        """Seen since ``cutoff`` (:func:`offline_cutoff`, which reads the servers' uptime row:
        a caller judging many devices computes it once and passes it)."""
        return self.last_seen is not None and self.last_seen >= (cutoff or offline_cutoff())

    def hosts_running_job(self) -> bool:
        # Querysets from devices_for() annotate this; fall back to a query otherwise.
        annotated = getattr(self, "running_jobs", None)
        if annotated is not None:
            return annotated > 0
        return self.jobs.filter(state="running").exists()

    def status(self, cutoff: datetime | None = None) -> str:
        """offline after the allowed missed heartbeats; degraded while its agent says it does
        not take jobs; busy while hosting a running job."""
        if not self.is_online(cutoff):
            return self.Status.OFFLINE
        if not self.worker_consuming:
            return self.Status.DEGRADED
        return self.Status.BUSY if self.hosts_running_job() else self.Status.ONLINE

    def status_detail(self, cutoff: datetime | None = None) -> str:
        """Why jobs queued on this device wait, or "" when they need not. Busy and online
        both say nothing, so the running-job check of :meth:`status` is not needed."""
        if not self.is_online(cutoff):
            seen = self.last_seen.isoformat(timespec="seconds") if self.last_seen else "never"
            return f"The agent is offline (last heartbeat: {seen})."
        if not self.worker_consuming:
            return f"The agent is not taking jobs: {self.worker_detail or 'no reason given'}."
        return ""

    def testbed_entry(self) -> dict[str, Any]:
        """The device as one entry of a method config's ``testbed`` list (its kind only when
        it differs from its profile's, so the entry of an unchanged device stays minimal)."""
        profile = PROFILES.get(self.profile_name)
        kind = {} if profile is not None and profile.kind == self.kind else {"kind": self.kind}
        return {
            "profile": self.profile_name,
            "name": self.name,
            **kind,
            "compute_gflops": self.compute_gflops,
            "memory_mib": self.memory_mib,
            "uplink_mbps": self.uplink_mbps,
            "downlink_mbps": self.downlink_mbps,
            "rtt_ms": self.rtt_ms,
        }


class EnrolmentToken(models.Model):
    """A secret an owner hands to agents to enrol devices until it expires or is revoked.

    A plain token enrols new names only: a name the owner already uses belongs to a device
    whose agent holds its credential, so a token holder cannot take it over. A *replacement*
    token (``replaces`` set) is the owner's explicit consent to give that one device a new
    credential: it enrols only that device's name, once.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        EXPIRED = "expired"
        REVOKED = "revoked"
        USED = "used"  # a replacement token after its one use

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="enrolment_tokens")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    note = models.CharField(max_length=100, blank=True,
                            help_text="The owner's label, e.g. where the token was handed out")
    replaces = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="replacement_tokens",
                                 help_text="The device this token re-enrols with a new credential")
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    uses = models.PositiveIntegerField(default=0, help_text="Enrolments made with it")
    last_used = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"enrolment token of {self.owner} until {self.expires_at:%Y-%m-%d %H:%M}"

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return self.Status.REVOKED
        if self.replaces_id is not None and self.uses > 0:
            return self.Status.USED
        if self.expires_at <= (now or timezone.now()):
            return self.Status.EXPIRED
        return self.Status.ACTIVE

    def is_valid(self, now: datetime | None = None) -> bool:
        return self.status(now) == self.Status.ACTIVE
