"""Every method of ``ml.registry`` through the API: listed with its schema, defaults, paper and
baselines; launchable with its defaults and all its baselines; a bad value for one of its own
fields is a 400 naming that field, with nothing stored.

Generic over the registry: a method added to ``ml/`` is covered without editing this file.
"""
from __future__ import annotations

import math
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from controlplane.experiments.models import Experiment, Job, Run
from ml import registry
from ml.config import MethodConfig

EXPERIMENTS = "/api/v1/experiments/"
METHODS = [method.name for method in registry.all_methods()]
#: Keys every method shares (MethodConfig); a method's "own" fields are the others.
SHARED_KEYS = set(MethodConfig.model_fields)
NOT_A_CHOICE = "no-such-choice-9000"


def _resolve(schema: dict, node: dict) -> dict:
    """``node`` with a ``$ref`` into ``$defs`` replaced by its target."""
    while "$ref" in node:
        target = schema.get("$defs", {})[node["$ref"].split("/")[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def bad_value(schema: dict, key: str) -> Any | None:
    """A value the schema of config key ``key`` refuses (out of range, not a choice, wrong
    type), or None when no value is known to be refused (e.g. a free-form string)."""
    node = _resolve(schema, schema["properties"][key])
    options = [_resolve(schema, option) for option in node.get("anyOf", [node])]
    options = [option for option in options if option.get("type") != "null"]
    if len(options) != 1:
        return None
    option = options[0]
    if "enum" in option or "const" in option:
        return NOT_A_CHOICE
    kind = option.get("type")
    if kind in ("integer", "number"):
        if "minimum" in option:
            return math.floor(option["minimum"]) - 1
        if "exclusiveMinimum" in option:
            return option["exclusiveMinimum"]
        if "maximum" in option:
            return math.ceil(option["maximum"]) + 1
        if "exclusiveMaximum" in option:
            return option["exclusiveMaximum"]
        return "not-a-number"
    if kind == "boolean":
        return "not-a-boolean"
    return None


def own_bad_field(method: registry.Method) -> tuple[str, Any]:
    """(key, refused value) for one of the method's own config fields, else a shared one."""
    schema = method.json_schema()
    keys = sorted(schema["properties"], key=lambda k: (k in SHARED_KEYS, k))
    for key in keys:
        value = bad_value(schema, key)
        if value is not None:
            return key, value
    pytest.fail(f"{method.name}: no config field with a value its schema refuses")


def counts() -> tuple[int, int, int]:
    return Experiment.objects.count(), Run.objects.count(), Job.objects.count()


def names_field(errors: dict, key: str) -> bool:
    """The config errors name ``key`` (a union's branches are ``key.<branch>``)."""
    return any(path == key or path.startswith(f"{key}.") for path in errors)


@pytest.fixture
def catalogue(api, owner) -> dict[str, dict]:
    response = api(owner).get("/api/v1/algorithms/?page_size=500")
    assert response.status_code == 200
    assert response.json()["next"] is None
    return {entry["name"]: entry for entry in response.json()["results"]}


@pytest.mark.django_db
@pytest.mark.parametrize("name", METHODS)
class TestEveryMethod:
    def test_the_catalogue_describes_it(self, catalogue, name):
        method = registry.get(name)
        entry = catalogue[name]
        assert entry == method.describe()
        assert entry["paper"].strip() and entry["summary"].strip()
        Draft202012Validator.check_schema(entry["schema"])
        # The form shows one input per schema property, filled with its default.
        assert set(entry["defaults"]) == set(entry["schema"]["properties"])
        assert SHARED_KEYS <= set(entry["defaults"])
        assert entry["defaults"] == method.parse_config(entry["defaults"]).model_dump(mode="json")
        for baseline in entry["baselines"]:
            assert baseline in catalogue, f"{name}: unknown baseline {baseline}"
            assert baseline != name

    def test_it_launches_with_its_defaults_and_all_its_baselines(self, api, owner,
                                                                 device_factory, catalogue,
                                                                 name):
        device_factory(owner)
        entry = catalogue[name]
        response = api(owner).post(EXPERIMENTS, {
            "name": f"{name} with defaults", "algorithm": name, "config": entry["defaults"],
            "baselines": entry["baselines"]}, format="json")
        assert response.status_code == 201, response.json()
        created = response.json()
        assert created["config"] == entry["defaults"]
        runs = created["runs"]
        assert [run["method"] for run in runs] == [name, *entry["baselines"]]
        for run in runs[1:]:  # the shared keys, validated by the baseline's own schema
            baseline = catalogue[run["method"]]
            assert set(run["config"]) <= set(baseline["schema"]["properties"])
            assert all(run["config"][key] == entry["defaults"][key]
                       for key in run["config"] if key in entry["defaults"])
        assert counts() == (1, len(runs), len(runs))
        assert all(run["job"]["state"] == "queued" for run in runs)

    def test_it_rejects_a_bad_value_of_its_own_field(self, api, owner, device_factory, name):
        device_factory(owner)
        method = registry.get(name)
        key, value = own_bad_field(method)
        before = counts()
        response = api(owner).post(EXPERIMENTS, {
            "name": "bad", "algorithm": name, "config": {key: value},
            "baselines": list(method.baselines)}, format="json")
        assert response.status_code == 400, (key, value, response.json())
        assert names_field(response.json()["config"], key), (key, value, response.json())
        assert counts() == before

    def test_it_rejects_an_unknown_config_key(self, api, owner, device_factory, name):
        device_factory(owner)
        before = counts()
        response = api(owner).post(EXPERIMENTS, {
            "name": "typo", "algorithm": name, "config": {"no_such_key": 1}}, format="json")
        assert response.status_code == 400
        assert "no_such_key" in response.json()["config"]
        assert counts() == before
