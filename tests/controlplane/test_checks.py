"""controlplane.checks: project invariants as system checks."""
import pytest
from pydantic import Field

from controlplane import checks
from ml import registry
from ml.config import MethodConfig


def ids(messages) -> list[str]:
    return [message.id for message in messages]


class TestCeleryCheck:
    def test_it_accepts_the_project_settings(self):
        assert checks.check_celery_is_json_only() == []

    def test_it_flags_pickle(self, settings):
        settings.CELERY_ACCEPT_CONTENT = ["json", "pickle"]
        assert ids(checks.check_celery_is_json_only()) == ["estuary.E001"]

    def test_it_flags_early_acks(self, settings):
        settings.CELERY_TASK_ACKS_LATE = False
        assert ids(checks.check_celery_is_json_only()) == ["estuary.E002"]


class TestDefaultDenyCheck:
    def test_it_accepts_the_project_settings(self):
        assert checks.check_api_is_default_deny() == []

    @pytest.mark.parametrize("classes", [[], ["rest_framework.permissions.AllowAny"]])
    def test_it_flags_an_open_api(self, settings, classes):
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                                   "DEFAULT_PERMISSION_CLASSES": classes}
        assert ids(checks.check_api_is_default_deny()) == ["estuary.E003"]


class BrokenSchemaConfig(MethodConfig):
    rounds: int = Field(default=1)

    @classmethod
    def model_json_schema(cls, *args, **kwargs):
        return {"type": "integer-ish"}


def _never_run(config, reporter):
    raise AssertionError("checks never run a method")



class TestCatalogueCheck:
    def test_it_accepts_the_catalogue(self):
        assert checks.check_method_catalogue() == []

    def test_it_flags_an_invalid_config_schema(self, registered):
        registered(registry.Method(name="broken-schema", paper="-", summary="-",
                                   config=BrokenSchemaConfig, run=_never_run))
        assert ids(checks.check_method_catalogue()) == ["estuary.E005"]

    def test_it_flags_an_unknown_baseline(self, registered):
        registered(registry.Method(name="lonely", paper="-", summary="-", config=MethodConfig,
                                   run=_never_run, baselines=("no-such-method",)))
        assert ids(checks.check_method_catalogue()) == ["estuary.E006"]


class TestHeartbeatCheck:
    def test_it_flags_a_slow_reaper(self, settings):
        settings.ESTUARY = {**settings.ESTUARY, "REAPER_INTERVAL_S": 60,
                            "HEARTBEAT_INTERVAL_S": 10}
        assert ids(checks.check_heartbeat_timing()) == ["estuary.W001"]
