"""Project invariants as Django system checks (``manage.py check``)."""
from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

JSON_ONLY = ["json"]


@register()
def check_celery_is_json_only(app_configs=None, **kwargs) -> list:
    """Celery must never accept pickle: task and result formats are JSON only."""
    errors = []
    for name in ("CELERY_TASK_SERIALIZER", "CELERY_RESULT_SERIALIZER"):
        if getattr(settings, name, None) != "json":
            errors.append(Error(f"{name} must be 'json'.", id="estuary.E001"))
    for name in ("CELERY_ACCEPT_CONTENT", "CELERY_RESULT_ACCEPT_CONTENT"):
        if list(getattr(settings, name, []) or []) != JSON_ONLY:
            errors.append(Error(f"{name} must be ['json'].", id="estuary.E001"))
    if not getattr(settings, "CELERY_TASK_ACKS_LATE", False):
        errors.append(Error("CELERY_TASK_ACKS_LATE must be on, so a dead agent's job is not "
                            "silently lost.", id="estuary.E002"))
    return errors


@register()
def check_api_is_default_deny(app_configs=None, **kwargs) -> list:
    """DRF's default permission must require authentication, never AllowAny."""
    classes = settings.REST_FRAMEWORK.get("DEFAULT_PERMISSION_CLASSES", [])
    if not classes or any(path.endswith(".AllowAny") for path in classes):
        return [Error("REST_FRAMEWORK DEFAULT_PERMISSION_CLASSES must deny anonymous users "
                      "(IsAuthenticated), not be empty or AllowAny.", id="estuary.E003")]
    return []


# Deploy-only: loading every algorithm imports torch, too slow for each manage.py command (and
# Celery runs the checks at worker start-up).
@register(deploy=True)
def check_method_catalogue(app_configs=None, **kwargs) -> list:
    """Every registered method imports, has a valid JSON schema and known baselines."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    from ml import registry

    try:
        methods = registry.all_methods()
    except Exception as exc:  # noqa: BLE001  (an algorithm module that fails to import)
        return [Error(f"The method catalogue does not load: {exc!r}", id="estuary.E004")]
    errors = []
    names = {method.name for method in methods}
    for method in methods:
        try:
            Draft202012Validator.check_schema(method.json_schema())
        except SchemaError as exc:
            errors.append(Error(f"Method {method.name}: invalid config JSON schema: "
                                f"{exc.message}", id="estuary.E005"))
        for baseline in method.baselines:
            if baseline not in names:
                errors.append(Error(f"Method {method.name}: baseline {baseline!r} is not in "
                                    "the catalogue.", id="estuary.E006"))
    return errors


@register()
def check_heartbeat_timing(app_configs=None, **kwargs) -> list:
    """The reaper must run at least once per heartbeat interval to keep its one-minute bound."""
    knobs = settings.ESTUARY
    if knobs["REAPER_INTERVAL_S"] > knobs["HEARTBEAT_INTERVAL_S"]:
        return [Warning("ESTUARY REAPER_INTERVAL_S exceeds HEARTBEAT_INTERVAL_S: dead agents' "
                        "jobs stay running longer than needed.", id="estuary.W001")]
    return []


@register()
def check_broker_confines_devices(app_configs=None, **kwargs) -> list:
    """The Redis of REDIS_URL must let the control plane give each device an ACL user confined
    to its own queue (controlplane.devices.broker): Redis >= 6.2 and an identity that manages
    ACL users. Otherwise devices would be refused the broker, or left open."""
    import redis

    from controlplane.devices.broker import broker_problems

    try:
        problems = broker_problems(settings.REDIS_URL)
    except redis.RedisError as exc:
        return [Warning(f"Could not check the broker's ACL support: Redis at REDIS_URL did not "
                        f"answer ({exc}).", id="estuary.W002")]
    return [Error(problem, id="estuary.E007") for problem in problems]
