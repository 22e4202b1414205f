"""The devices app's Celery tasks (queue ``controlplane``, run by beat)."""
from celery import shared_task

from controlplane.devices import broker


@shared_task(name="devices.reconcile_broker_users", ignore_result=True)
def reconcile_broker_users() -> dict[str, int]:
    """Re-assert every device's broker user and delete those of deleted devices (every
    BROKER_ACL_INTERVAL_S): Redis forgets users it was given at run time when it restarts."""
    done = broker.reconcile_device_users()
    return {"granted": done.granted, "revoked": done.revoked}
