"""Where a distributed experiment's roles run: its devices, and the placement of each run.

Which devices: the ``devices`` listed at creation, else the owner's online devices. The first
cloud device among them hosts the coordinator (rank 0); the edge devices host the workers,
several virtual workers each when there are more workers than edge devices (the rule itself is
``ml.distributed.plan_placement``). Other cloud devices are not used. Methods whose workers
are cloud servers (``ml.distributed.worker_kind``: cross-region training, one region a server)
have the other cloud devices host the workers instead, and no edge device is used. A
single-device method runs whole on one device (:func:`single_device`).
"""
from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError

from controlplane.devices.models import Device
from controlplane.devices.queries import online_devices_for
from controlplane.experiments.scheduling import choose_host
from ml import distributed


def distributed_devices(user, listed: list[Device] | None, worker_kind: str = "edge"
                        ) -> tuple[Device, list[Device]]:
    """(coordinator, worker devices) of a distributed experiment: the first cloud device and
    the devices of ``worker_kind`` (``edge``, or ``cloud``: the other cloud devices); 400 on
    ``devices`` without a cloud device or without a worker device."""
    devices = listed if listed is not None else list(online_devices_for(user))
    where = "among the listed devices" if listed is not None else "among your online devices"
    clouds = [device for device in devices if device.kind == Device.Kind.CLOUD]
    edges = [device for device in devices if device.kind == Device.Kind.EDGE]
    if not clouds:
        raise ValidationError({"devices": [
            f"A distributed run needs a cloud device for its coordinator; there is none {where}."]})
    if worker_kind == "cloud":
        if len(clouds) < 2:
            raise ValidationError({"devices": [
                "This method's workers are cloud servers: it needs a cloud device for its "
                f"coordinator and at least one more for its workers; there is {len(clouds)} "
                f"{where}."]})
        return clouds[0], clouds[1:]
    if not edges:
        raise ValidationError({"devices": [
            f"A distributed run needs at least one edge device for its workers; there is none "
            f"{where}."]})
    return clouds[0], edges


def single_device(user, listed: list[Device] | None, host_id) -> Device:
    """Where a single-device method's distributed run executes: ``host`` (one of ``listed``
    when devices are listed), else the first listed device, else the device an emulated run
    would take (:func:`choose_host`); 400 on ``host`` when it is not among the listed."""
    if host_id is not None:
        if listed is not None and host_id not in {device.id for device in listed}:
            raise ValidationError({"host": ["The host must be one of the listed devices."]})
        return choose_host(user, host_id)
    if listed:
        return listed[0]
    return choose_host(user, None)


def slot_source(device: Device) -> dict[str, Any]:
    """A device as ``plan_placement`` takes it."""
    return {"device": str(device.id), "name": device.name, "profile": device.testbed_entry()}


def place(method: str, config: dict[str, Any], coordinator: Device, edges: list[Device]
          ) -> list[dict[str, Any]]:
    """The run's placement as stored (``Slot.as_dict()`` per rank): a single-device method's
    on ``coordinator`` alone; 400 naming the field ``plan_placement`` names when it cannot
    place."""
    if not distributed.supports_distributed(method):
        return [slot.as_dict() for slot in
                distributed.single_device_placement(slot_source(coordinator))]
    try:
        slots = distributed.plan_placement(method, config, slot_source(coordinator),
                                           [slot_source(edge) for edge in edges])
    except distributed.PlacementError as exc:
        field = getattr(exc, "field", "devices")
        message = getattr(exc, "message", None) or str(exc)
        raise ValidationError({field: [message]}) from None
    return [slot.as_dict() for slot in slots]


def testbed_of(placement: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The emulated testbed equivalent to a stored placement."""
    return distributed.testbed_of([distributed.Slot.from_dict(slot) for slot in placement])


def public_placement(placement: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the API shows of a placement: role, rank, device, name, workers per rank."""
    return [{"role": slot["role"], "rank": slot["rank"], "device": slot["device"],
             "name": slot["name"], "workers": list(slot["workers"])} for slot in placement]
