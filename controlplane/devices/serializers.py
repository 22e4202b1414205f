"""Device API shapes: enrolment, heartbeat and the device itself."""
from __future__ import annotations

from datetime import datetime

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.devices.models import Device, EnrolmentToken, offline_cutoff
from controlplane.devices.queries import devices_for
from controlplane.fields import FiniteFloatField, StrictModelSerializer, StrictSerializer
from ml.testbed.profiles import PROFILES

#: Device names: what `python -m agents run --name` takes and metrics show.
DEVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DEVICE_NAME_MESSAGE = "Letters, digits and _ . - only, starting with a letter or digit."


class EnrolmentTokenRequestSerializer(StrictSerializer):
    ttl_hours = serializers.IntegerField(
        min_value=1, max_value=settings.ESTUARY["MAX_ENROLMENT_TTL_HOURS"], default=24)
    note = serializers.CharField(max_length=100, allow_blank=True, default="",
                                 help_text="A label for the token list")
    replace_device = serializers.UUIDField(
        required=False, allow_null=True, default=None,
        help_text="One of your devices: the token then gives that device a new credential, "
                  "once (its agent's stored credential stops working)")

    def validate_replace_device(self, device_id):
        if device_id is None:
            return None
        device = devices_for(self.context["request"].user).filter(pk=device_id).first()
        if device is None:
            raise serializers.ValidationError("No such device.")
        return device


class EnrolmentTokenSerializer(serializers.ModelSerializer):
    """An enrolment token as its owner lists it (never its secret)."""

    replace_device = serializers.UUIDField(source="replaces_id", allow_null=True, read_only=True)
    revoked = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()

    class Meta:
        model = EnrolmentToken
        fields = ["id", "note", "created", "expires_at", "status", "revoked", "revoked_at",
                  "uses", "last_used", "replace_device"]
        read_only_fields = fields

    def get_revoked(self, token: EnrolmentToken) -> bool:
        return token.revoked_at is not None

    @extend_schema_field(serializers.ChoiceField(choices=EnrolmentToken.Status.choices))
    def get_status(self, token: EnrolmentToken) -> str:
        return token.status()


class NewEnrolmentTokenSerializer(EnrolmentTokenSerializer):
    """A token just created: the listing plus its secret, shown this once."""

    token = serializers.CharField(read_only=True,
                                  help_text="Shown once; give it to `python -m agents run`")

    class Meta(EnrolmentTokenSerializer.Meta):
        fields = ["token", *EnrolmentTokenSerializer.Meta.fields]
        read_only_fields = fields


class ProfileOverridesSerializer(StrictSerializer):
    """Fields of a catalogue profile a device may replace."""

    kind = serializers.ChoiceField(choices=Device.Kind.choices, required=False)
    compute_gflops = FiniteFloatField(positive=True, required=False)
    memory_mib = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
    uplink_mbps = FiniteFloatField(positive=True, required=False)
    downlink_mbps = FiniteFloatField(positive=True, required=False)
    rtt_ms = FiniteFloatField(min_value=0, required=False)
    accelerator = serializers.CharField(max_length=100, allow_blank=True, required=False)


def validate_profile_name(name: str) -> str:
    if name not in PROFILES:
        raise serializers.ValidationError(
            f"Unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}.")
    return name


#: A host name or an IPv4/IPv6 address (no scheme, port or path).
ADVERTISE_ADDRESS = r"^[A-Za-z0-9](?:[A-Za-z0-9.:-]{0,253}[A-Za-z0-9])?$"


def advertise_address_field() -> serializers.RegexField:
    return serializers.RegexField(
        ADVERTISE_ADDRESS, max_length=255, required=False,
        error_messages={"invalid": "A host name or an IP address, without scheme or port."},
        help_text="Where the other agents of a distributed run reach this agent")


class EnrolSerializer(StrictSerializer):
    """An agent's first contact: an enrolment token, its name and its profile."""

    token = serializers.CharField(max_length=200)
    name = serializers.RegexField(DEVICE_NAME, max_length=63,
                                  error_messages={"invalid": DEVICE_NAME_MESSAGE})
    profile = serializers.CharField(max_length=63, validators=[validate_profile_name])
    overrides = ProfileOverridesSerializer(required=False, default=dict)
    advertise_address = advertise_address_field()


class ReenrolSerializer(StrictSerializer):
    """A restarted agent that presents its credential; may refresh its profile.

    ``token`` and ``name`` are accepted so an agent may send the same body as at enrolment,
    and ignored: the credential identifies the device, which keeps its name."""

    token = serializers.CharField(max_length=200, required=False)
    name = serializers.RegexField(DEVICE_NAME, max_length=63, required=False,
                                  error_messages={"invalid": DEVICE_NAME_MESSAGE})
    profile = serializers.CharField(max_length=63, required=False,
                                    validators=[validate_profile_name])
    overrides = ProfileOverridesSerializer(required=False, default=dict)
    advertise_address = advertise_address_field()


class EnrolmentSerializer(serializers.Serializer):
    device_id = serializers.UUIDField()
    credential = serializers.CharField(help_text="Send as `Authorization: Device <credential>`")
    broker_url = serializers.CharField(
        help_text="The Celery broker, with this device's own broker user and credential")
    queue = serializers.CharField(help_text="The only queue this device's broker user reaches")
    heartbeat_interval_s = serializers.IntegerField()


class WorkerStateSerializer(StrictSerializer):
    """Whether the agent's worker takes jobs from its queue, and if not, why."""

    consuming = serializers.BooleanField()
    detail = serializers.CharField(max_length=500, allow_blank=True, required=False, default="")


class GpuUsageSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    memory_used_mib = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
    memory_total_mib = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
    utilization_percent = FiniteFloatField(min_value=0, max_value=100, allow_null=True,
                                           required=False, default=None)


class ResourceUsageSerializer(StrictSerializer):
    """The agent's machine now (agents/resources.py); every part optional."""

    cpu_percent = FiniteFloatField(min_value=0, max_value=100, required=False)
    memory_percent = FiniteFloatField(min_value=0, max_value=100, required=False)
    memory_used_mib = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    memory_total_mib = serializers.IntegerField(min_value=0, max_value=2**31 - 1,
                                                required=False)
    gpus = serializers.ListField(child=GpuUsageSerializer(), max_length=64, required=False,
                                 default=list)


class HeartbeatSerializer(StrictSerializer):
    running_jobs = serializers.ListField(child=serializers.UUIDField(), required=False,
                                         default=list, max_length=1000)
    worker = WorkerStateSerializer(required=False, help_text="Absent: consuming")
    advertise_address = advertise_address_field()
    resources = ResourceUsageSerializer(required=False,
                                        help_text="Absent: the last reported use is kept")


class HeartbeatAnswerSerializer(serializers.Serializer):
    cancel_jobs = serializers.ListField(child=serializers.UUIDField())


def device_jobs(device: Device) -> list[dict]:
    """The jobs ``device`` runs now, as the devices page shows them. An emulated run's one job
    plays every role in one process; a job of a distributed run has the role of its rank."""
    jobs = getattr(device, "running_job_rows", None)  # prefetched by with_job_summaries
    if jobs is None:
        jobs = (device.jobs.filter(state="running").select_related("run__experiment")
                .order_by("started_at"))
    return [{"job": str(job.id), "experiment": str(job.run.experiment_id),
             "experiment_name": job.run.experiment.name, "method": job.run.method,
             "role": _role_of(job)} for job in jobs]


def _role_of(job) -> str:
    """``coordinator``/``worker`` (with its rank) for a distributed run's job; an emulated
    run's job plays every role."""
    for slot in job.run.placement:
        if slot["rank"] == job.rank:
            return f"{slot['role']} (rank {job.rank})"
    return "all roles (emulated)"


class DeviceSerializer(StrictModelSerializer):
    """A device as its owner sees it; PATCH changes its name or profile fields."""

    name = serializers.RegexField(DEVICE_NAME, max_length=63,
                                  error_messages={"invalid": DEVICE_NAME_MESSAGE})
    compute_gflops = FiniteFloatField(positive=True)
    uplink_mbps = FiniteFloatField(positive=True)
    downlink_mbps = FiniteFloatField(positive=True)
    rtt_ms = FiniteFloatField(min_value=0)
    memory_mib = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    status = serializers.SerializerMethodField()
    status_detail = serializers.SerializerMethodField(
        help_text="Why jobs queued on this device wait (offline, degraded), else empty")
    queue = serializers.CharField(read_only=True)
    resources = serializers.JSONField(read_only=True, help_text=(
        "CPU, memory and GPU use from its agent's last heartbeat (agents/resources.py)"))
    current_jobs = serializers.SerializerMethodField(help_text=(
        "The jobs it runs now: experiment, method and the role it plays"))
    queue_depth = serializers.SerializerMethodField(help_text="Jobs queued on it, waiting")

    class Meta:
        model = Device
        fields = ["id", "name", "kind", "profile_name", "compute_gflops", "memory_mib",
                  "uplink_mbps", "downlink_mbps", "rtt_ms", "accelerator", "status",
                  "status_detail", "last_seen", "created", "queue", "advertise_address",
                  "resources", "current_jobs", "queue_depth"]
        read_only_fields = ["id", "profile_name", "status", "status_detail", "last_seen",
                            "created", "queue", "advertise_address", "resources", "current_jobs",
                            "queue_depth"]

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_current_jobs(self, device: Device) -> list[dict]:
        return device_jobs(device)

    def get_queue_depth(self, device: Device) -> int:
        counted = getattr(device, "queued_jobs", None)  # annotated by with_job_summaries
        return device.jobs.filter(state="queued").count() if counted is None else counted

    def _offline_cutoff(self) -> datetime:
        # Once per serializer, which a list shares among its devices: one query, not two each.
        if not hasattr(self, "_cutoff"):
            self._cutoff = offline_cutoff()
        return self._cutoff

    def get_status(self, device: Device) -> str:
        return device.status(self._offline_cutoff())

    def get_status_detail(self, device: Device) -> str:
        return device.status_detail(self._offline_cutoff())

    def validate_name(self, name: str) -> str:
        # Names are unique per owner: only the owner's own devices can collide.
        others = Device.objects.filter(owner_id=self.instance.owner_id, name=name)
        if others.exclude(pk=self.instance.pk).exists():
            raise serializers.ValidationError("You have another device with this name.")
        return name
