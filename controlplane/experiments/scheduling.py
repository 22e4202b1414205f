"""Where an experiment's jobs run: the scheduling rule for choosing the hosting device."""
from __future__ import annotations

import uuid

from django.db.models import Case, IntegerField, Value, When
from rest_framework.exceptions import ValidationError

from controlplane.devices.models import Device
from controlplane.devices.queries import devices_for, online_devices_for


def choose_host(user, host_id: uuid.UUID | None) -> Device:
    """The device that hosts ``user``'s new experiment: ``host_id`` if given (one of the user's
    online devices), else an online cloud device, an idle one before a busy one.

    Raises a 400 ``ValidationError`` on field ``host`` when there is none.
    """
    if host_id is not None:
        host = devices_for(user).filter(id=host_id).first()
        if host is None:
            raise ValidationError({"host": ["Unknown device."]})
        if not host.is_online():
            raise ValidationError(
                {"host": [f"Device {host.name} is offline; start its agent first."]})
        return host
    host = (online_devices_for(user)
            .annotate(edge=Case(When(kind=Device.Kind.CLOUD, then=Value(0)), default=Value(1),
                                output_field=IntegerField()))
            .order_by("edge", "running_jobs", "name").first())
    if host is None:
        raise ValidationError({"host": [
            "No online device to host the experiment; start an agent "
            "(python -m agents run --server URL --token TOKEN --name NAME --profile ...)."]})
    return host
