"""Placement rules, the emulated twin of a placement, and their errors."""
import pytest

from ml.distributed import PlacementError, Slot, plan_placement, supports_distributed, testbed_of
from ml.testbed.presets import resolve_testbed

CLOUD = {"device": "c-0", "name": "cloud", "profile": {"profile": "a6000-server", "name": "cloud"}}


def edge(i, profile="jetson-nx", **overrides):
    return {"device": f"e-{i}", "name": f"edge-{i}",
            "profile": {"profile": profile, "name": f"edge-{i}", **overrides}}


def test_it_places_the_coordinator_at_rank_0_and_workers_round_robin():
    slots = plan_placement("fedavg", {"workers": 5}, CLOUD, [edge(1), edge(2), edge(3)])
    assert [(s.role, s.rank, s.device, s.workers) for s in slots] == [
        ("coordinator", 0, "c-0", ()), ("worker", 1, "e-1", (0, 3)),
        ("worker", 2, "e-2", (1, 4)), ("worker", 3, "e-3", (2,))]


def test_only_as_many_edges_as_workers_are_used():
    slots = plan_placement("splitfed", {"workers": 2}, CLOUD, [edge(1), edge(2), edge(3)])
    assert [s.device for s in slots] == ["c-0", "e-1", "e-2"]


def test_a_slot_round_trips_through_json():
    slot = plan_placement("fedavg", {"workers": 3}, CLOUD, [edge(1)])[1]
    assert Slot.from_dict(slot.as_dict()) == slot
    assert slot.as_dict()["workers"] == [0, 1, 2]
    with pytest.raises(ValueError):
        Slot.from_dict({**slot.as_dict(), "rank": True})


@pytest.mark.parametrize("method, config, coordinator, edges, field", [
    ("comp", {}, CLOUD, [edge(1)], "execution"),
    ("no-such-method", {}, CLOUD, [edge(1)], "execution"),
    ("fedavg", {}, {}, [edge(1)], "devices"),
    ("fedavg", {}, edge(9), [edge(1)], "devices"),
    ("fedavg", {}, CLOUD, [], "devices"),
    ("fedavg", {}, CLOUD, [CLOUD], "devices"),
    ("fedavg", {}, CLOUD, [edge(1), edge(1)], "devices"),
    ("fedavg", {"workers": 0}, CLOUD, [edge(1)], "workers"),
    ("fedavg", {"workers": "3"}, CLOUD, [edge(1)], "workers"),
])
def test_it_refuses_what_it_cannot_place_naming_the_field(method, config, coordinator, edges,
                                                          field):
    with pytest.raises(PlacementError) as caught:
        plan_placement(method, config, coordinator, edges)
    assert caught.value.field == field


def test_the_catalogue_says_which_methods_run_distributed():
    assert supports_distributed("fedavg") and supports_distributed("splitfed")
    assert supports_distributed("diloco") and not supports_distributed("nope")


def test_the_twin_testbed_has_the_server_and_one_entry_per_virtual_worker_in_order():
    slots = plan_placement("fedavg", {"workers": 5}, CLOUD,
                           [edge(1, uplink_mbps=7.0), edge(2, "jetson-tx2")])
    entries = testbed_of(slots)
    assert [e["name"] for e in entries] == ["cloud", "edge-1", "edge-2", "edge-1.2", "edge-2.2",
                                            "edge-1.3"]
    testbed = resolve_testbed(entries, 5)
    assert [d.name for d in testbed.workers] == ["edge-1", "edge-2", "edge-1.2", "edge-2.2",
                                                 "edge-1.3"]
    assert testbed.server.name == "cloud"
    assert testbed.workers[2].profile.uplink_mbps == 7.0
    assert testbed.workers[1].profile.name == "jetson-tx2"


def test_a_placement_without_coordinator_or_with_a_worker_twice_has_no_twin():
    slots = plan_placement("fedavg", {"workers": 2}, CLOUD, [edge(1), edge(2)])
    with pytest.raises(PlacementError):
        testbed_of(slots[1:])
    with pytest.raises(PlacementError):
        testbed_of([*slots, Slot("worker", 3, "e-3", "edge-3", {"profile": "jetson-nx"}, (1,))])


def cloud(i):
    return {"device": f"c-{i}", "name": f"region-{i}",
            "profile": {"profile": "h100", "name": f"region-{i}", "uplink_mbps": 100.0}}


def test_cross_region_workers_are_cloud_servers_and_the_twin_is_the_regions():
    slots = plan_placement("cocodc", {"workers": 3}, CLOUD, [cloud(1), cloud(2)])
    assert [(s.role, s.device, s.workers) for s in slots] == [
        ("coordinator", "c-0", ()), ("worker", "c-1", (0, 2)), ("worker", "c-2", (1,))]
    entries = testbed_of(slots)
    assert [e["name"] for e in entries] == ["region-1", "region-2", "region-1.2"]
    testbed = resolve_testbed(entries, 3)
    assert [d.name for d in testbed.workers] == ["region-1", "region-2", "region-1.2"]
    with pytest.raises(PlacementError, match="not a cloud device") as info:
        plan_placement("diloco", {"workers": 2}, CLOUD, [edge(1)])
    assert info.value.field == "devices"
    with pytest.raises(PlacementError, match="not an edge device"):
        plan_placement("fedavg", {"workers": 2}, CLOUD, [cloud(1)])
