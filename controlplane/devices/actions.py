"""State changes of devices: enrolment, heartbeats, profile updates, deletion.

Each action runs in one transaction and trusts its (already validated) arguments.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from controlplane.devices import broker
from controlplane.devices.credentials import digest, new_secret
from controlplane.devices.models import Device, EnrolmentToken
from controlplane.errors import Conflict
from controlplane.experiments.actions import fail_jobs
from controlplane.experiments.models import Job
from ml.testbed.profiles import PROFILES

#: Profile fields a device may override at enrolment or later.
PROFILE_FIELDS = ("kind", "compute_gflops", "memory_mib", "uplink_mbps", "downlink_mbps",
                  "rtt_ms", "accelerator")


@dataclass(frozen=True)
class Enrolment:
    """What an agent gets back: its device and the credential (shown only now)."""

    device: Device
    credential: str
    created: bool


def create_enrolment_token(owner, ttl_hours: int, note: str = "",
                           replaces: Device | None = None) -> tuple[EnrolmentToken, str]:
    """A new enrolment token of ``owner``, valid for ``ttl_hours``; returns (row, secret).

    With ``replaces`` (one of the owner's devices) it is a replacement token: its one use
    gives that device a new credential (the old one stops working)."""
    secret = new_secret()
    token = EnrolmentToken.objects.create(
        owner=owner, token_hash=digest(secret), note=note, replaces=replaces,
        expires_at=timezone.now() + timedelta(hours=ttl_hours))
    return token, secret


@transaction.atomic
def revoke_enrolment_token(token: EnrolmentToken) -> EnrolmentToken:
    """Make ``token`` unusable from now on (devices it enrolled keep their credentials).
    Revoking a revoked token changes nothing."""
    token = EnrolmentToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def _profile_values(profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    base = PROFILES[profile].as_dict()
    values = {field: base[field] for field in PROFILE_FIELDS}
    values.update(overrides)
    return {"profile_name": profile, **values}


@transaction.atomic
def enrol_device(token_secret: str, name: str, profile: str,
                 overrides: dict[str, Any], advertise_address: str | None = None) -> Enrolment:
    """Exchange an enrolment token for a device credential.

    A new name (for the token's owner; names are unique per owner) creates a device. A name
    the owner already uses belongs to a device whose agent holds its credential: a plain token
    is refused (409, so a token holder cannot take the device over); the owner's replacement
    token for that device re-enrols it: same id, a new credential (the old one stops working,
    at the broker too), the profile replaced. The device's broker user is created (or
    replaced) on commit.
    """
    token = (EnrolmentToken.objects.select_for_update()
             .filter(token_hash=digest(token_secret)).first())
    if token is None or not token.is_valid():
        raise ValidationError({"token": ["Invalid, expired or revoked enrolment token."]})
    device = (Device.objects.select_for_update()
              .filter(owner_id=token.owner_id, name=name).first())
    if token.replaces_id is not None:
        if device is None or device.pk != token.replaces_id:
            raise ValidationError({"name": [
                f"This token replaces the credential of device {token.replaces.name!r} "
                "and enrols only that name."]})
    elif device is not None:
        raise _name_taken(name)
    credential = new_secret()
    created = device is None
    if created:
        device = Device(owner_id=token.owner_id, name=name)
    for field, value in _profile_values(profile, overrides).items():
        setattr(device, field, value)
    device.credential_hash = digest(credential)
    device.last_seen = timezone.now()
    if advertise_address is not None:
        device.advertise_address = advertise_address
    try:
        with transaction.atomic():
            device.save()
    except IntegrityError:  # another enrolment of this new name committed first
        raise _name_taken(name) from None
    token.uses += 1
    token.last_used = timezone.now()
    token.save(update_fields=["uses", "last_used"])
    broker.apply_on_commit(broker.grant_device, device.id, device.credential_hash,
                           disconnect=not created)
    return Enrolment(device=device, credential=credential, created=created)


def _name_taken(name: str) -> Conflict:
    return Conflict({"name": [
        f"A device named {name!r} is already enrolled. Restart its agent with its stored "
        "credential, or have its owner issue a replacement token for it (replace_device)."]})


@transaction.atomic
def reenrol_device(device: Device, profile: str | None, overrides: dict[str, Any],
                   advertise_address: str | None = None) -> Device:
    """A restarted agent presenting its credential: refresh last_seen and, if given, the
    profile; its broker user is re-asserted on commit (in case Redis lost it)."""
    if profile is not None:
        for field, value in _profile_values(profile, overrides).items():
            setattr(device, field, value)
    else:
        for field, value in overrides.items():
            setattr(device, field, value)
    if advertise_address is not None:
        device.advertise_address = advertise_address
    device.last_seen = timezone.now()
    device.save()
    broker.apply_on_commit(broker.grant_device, device.id, device.credential_hash)
    return device


@transaction.atomic
def record_heartbeat(device: Device, running_job_ids: list[uuid.UUID],
                     worker: dict[str, Any] | None = None,
                     advertise_address: str | None = None,
                     resources: dict[str, Any] | None = None) -> list[uuid.UUID]:
    """Mark ``device`` alive; return the jobs it reports running that it should stop.

    ``worker`` (``{"consuming", "detail"}``) is whether its agent takes jobs from its queue;
    a heartbeat without it counts as consuming. A job should stop when it is not this device's
    queued or running job any more: cancelled by its owner, failed by the reaper, or unknown.
    The jobs it lists are marked as listed now; a running job it stops listing is failed by the
    reaper (``reap_stale_jobs``). A device that cannot consume gets its broker user re-asserted.
    """
    now = timezone.now()
    worker = worker or {"consuming": True}
    consuming = worker["consuming"]
    changes: dict[str, Any] = {"advertise_address": advertise_address} if advertise_address else {}
    if resources is not None:
        changes["resources"] = resources
    Device.objects.filter(pk=device.pk).update(
        last_seen=now, worker_consuming=consuming,
        worker_detail="" if consuming else worker.get("detail", ""), **changes)
    wanted = Job.objects.filter(device=device, id__in=running_job_ids,
                                state__in=[Job.State.QUEUED, Job.State.RUNNING])
    still_wanted = set(wanted.values_list("id", flat=True))
    wanted.update(listed_at=now)
    if not consuming:
        # A restarted Redis has forgotten its ACL users: re-assert this device's at once rather
        # than leave its agent locked out until the next reconciliation.
        broker.apply_on_commit(broker.grant_device, device.id, device.credential_hash)
    return [job_id for job_id in running_job_ids if job_id not in still_wanted]


@transaction.atomic
def update_device(device: Device, changes: dict[str, Any]) -> Device:
    """Apply validated profile (or name) changes."""
    for field, value in changes.items():
        setattr(device, field, value)
    device.save(update_fields=list(changes))
    return device


@transaction.atomic
def delete_device(device: Device) -> None:
    """Delete ``device``; refused (409) while it hosts a running job.

    Jobs still queued on it can never start, so they fail with a clear error first. Its broker
    user and queue go on commit.
    """
    device = Device.objects.select_for_update().get(pk=device.pk)
    if device.jobs.filter(state=Job.State.RUNNING).exists():
        raise Conflict("The device hosts a running job; cancel its experiment first.")
    fail_jobs(device.jobs.filter(state=Job.State.QUEUED),
              f"Hosting device {device.name} was deleted before the job started.")
    broker.apply_on_commit(broker.revoke_device, device.id)
    device.delete()
