"""Every metric a method declares is described in the one catalogue (label, unit, text)."""
from ml import metrics_catalogue, registry
from ml.metrics_catalogue import UNITS, describe, entry_key


def test_it_describes_every_metric_every_registered_method_declares():
    missing = {(method.name, name) for method in registry.all_methods()
               for name in method.metrics if entry_key(name) is None}
    assert not missing, f"add these to ml/metrics_catalogue.py: {sorted(missing)}"


def test_it_serves_the_descriptions_with_each_catalogue_entry():
    for method in registry.all_methods():
        info = method.describe()["metric_info"]
        assert set(info) == set(method.metrics)
        for name, entry in info.items():
            assert entry["label"] and entry["description"], (method.name, name)
            assert entry["unit"] in UNITS


def test_it_resolves_per_entity_series_by_their_prefix():
    info = describe("waiting_time_s/worker-03")
    assert (info.label, info.unit) == ("Waiting time · worker-03", "s")
    assert describe("traffic_bytes/model").label == "Traffic: model weights"  # exact first
    assert describe("traffic_bytes/pings").label == "Traffic · pings"
    assert describe("accuracy").unit == "fraction"
    assert describe("no_such_metric").label == "no_such_metric"


def test_every_entry_has_a_known_unit_and_a_sentence():
    for key, info in metrics_catalogue.CATALOGUE.items():
        assert info.unit in UNITS, key
        assert info.description.endswith("."), key
