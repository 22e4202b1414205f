"""Named testbeds and resolving a config's ``testbed`` into workers and a server."""
from collections import Counter

import pytest

from ml.config import ConfigError
from ml.testbed import PRESETS, check_testbed_spec, cross_region, resolve_testbed


def profile_counts(devices):
    return Counter(d.profile.name for d in devices)


def test_jetson80_is_thirty_tx2_forty_nx_ten_orin_and_an_a6000_server():
    tb = resolve_testbed("jetson80")
    assert profile_counts(tb.workers) == {"jetson-tx2": 30, "jetson-nx": 40, "jetson-agx-orin": 10}
    assert tb.server.profile.name == "a6000-server"
    assert len({d.name for d in tb.devices}) == 81


def test_jetson30_a6000_is_thirty_jetsons_and_an_eight_gpu_server():
    tb = resolve_testbed("jetson30-a6000")
    assert len(tb.workers) == 30
    assert all(d.kind == "edge" for d in tb.workers)
    assert tb.server.profile.accelerator == "8x NVIDIA RTX A6000"


def test_cross_region_links_have_the_given_bandwidth_and_rtt():
    default = resolve_testbed("cross-region-4")
    assert len(default.workers) == 4 and default.server is default.workers[0]
    a, b = default.workers[:2]
    assert default.bandwidth_bps(a, b) == 1e9
    assert default.latency_s(a, b) == pytest.approx(0.050)

    slow = resolve_testbed(cross_region(bandwidth_mbps=100.0, rtt_ms=250.0))
    a, b = slow.workers[:2]
    assert slow.transfer_time(a, b, 1_000_000) == pytest.approx(0.125 + 0.08)


def test_a_preset_string_sets_the_cross_region_bandwidth_and_rtt():
    tb = resolve_testbed("cross-region-4:bandwidth_mbps=100, rtt_ms=250")
    a, b = tb.workers[:2]
    assert tb.transfer_time(a, b, 1_000_000) == pytest.approx(0.125 + 0.08)
    assert len(resolve_testbed("cross-region-4:regions=2").workers) == 2
    check_testbed_spec("cross-region-4:rtt_ms=20")  # what a config's validator calls


def test_a_preset_string_sets_the_servers_shared_access_link():
    tb = resolve_testbed("jetson80:server_mbps=250", workers=20)
    assert tb.server.profile.uplink_mbps == tb.server.profile.downlink_mbps == 250.0
    # 20 workers' uplinks add up to 760 Mbit/s, so their uploads queue on the 250 Mbit/s link
    arrivals = [tb.send(w, tb.server, 100_000, "features") for w in tb.workers]
    assert max(arrivals) >= 20 * 100_000 * 8 / 250e6
    assert resolve_testbed("jetson80").server.profile.downlink_mbps == 10_000.0


@pytest.mark.parametrize("spec, message", [
    ("cross-region-4:latency=3", "parameters among: regions, bandwidth_mbps, rtt_ms, profile"),
    ("cross-region-4:rtt_ms=fast", "rtt_ms='fast' is not a finite number"),
    ("cross-region-4:regions=99", "regions must be in 1..8"),
    ("cross-region-4:regions=2.5", "regions='2.5' is not a valid int"),
    ("cross-region-4:rtt_ms=-5", "rtt_ms=-5.0: Input should be greater than or equal to 0"),
    ("jetson80:workers=3", "parameters among: server_mbps"),
    # The message names the parameter given, not the profile field it sets (uplink_mbps).
    ("jetson80:server_mbps=0", "server_mbps=0.0: Input should be greater than 0"),
    ("jetson80:server_mbps=inf", "server_mbps='inf' is not a finite number"),
    ("jetson80:server_mbps=nan", "server_mbps='nan' is not a finite number"),
])
def test_bad_preset_parameters_are_a_config_error_naming_testbed(spec, message):
    with pytest.raises(ConfigError) as info:
        resolve_testbed(spec)
    assert list(info.value.errors) == ["testbed"] and message in info.value.errors["testbed"]


def test_local3_has_two_edge_workers_and_one_server():
    tb = resolve_testbed("local-3")
    assert [d.kind for d in tb.workers] == ["edge", "edge"]
    assert tb.server.kind == "cloud"


def test_every_preset_resolves():
    for name in PRESETS:
        assert resolve_testbed(name).workers


def test_fewer_workers_take_a_subset_stratified_by_profile():
    tb = resolve_testbed("jetson80", workers=10)
    # quotas 3.75 / 5 / 1.25 -> 4 / 5 / 1 by largest remainder
    assert profile_counts(tb.workers) == {"jetson-tx2": 4, "jetson-nx": 5, "jetson-agx-orin": 1}
    assert [d.name for d in tb.workers] == [d.name for d in resolve_testbed("jetson80", 10).workers]
    assert tb.workers[0].name == "jetson-tx2-01"


def test_more_workers_cycle_through_the_devices_with_distinct_names():
    tb = resolve_testbed("local-3", workers=5)
    assert [d.name for d in tb.workers] == [
        "jetson-nx-01", "jetson-orin-nano-01", "jetson-nx-01.2", "jetson-orin-nano-01.2",
        "jetson-nx-01.3"]
    assert tb.workers[2].profile == tb.workers[0].profile
    assert tb.workers[2] is not tb.workers[0]


def test_a_device_list_applies_overrides_and_names_devices():
    tb = resolve_testbed([
        {"profile": "jetson-nx", "compute_gflops": 15.0},
        {"profile": "jetson-nx", "name": "lab-nx", "uplink_mbps": 5.0},
        {"profile": "h100"},
    ])
    first, second = tb.workers
    assert first.name == "jetson-nx-01" and first.profile.compute_gflops == 15.0
    assert second.name == "lab-nx" and second.profile.uplink_mbps == 5.0
    assert second.profile.compute_gflops == 150.0  # not overridden: the catalogue's value
    assert tb.server.name == "h100-01"


@pytest.mark.parametrize("spec, field", [
    ("jetson-9000", "testbed"),
    ([], "testbed"),
    ([{"profile": "jetson-nx"}, {"profile": "toaster"}], "testbed.1.profile"),
    ([{"profile": "jetson-nx", "rtt_ms": -1}], "testbed.0.rtt_ms"),
    ([{"profile": "jetson-nx", "name": "a"}, {"profile": "h100", "name": "a"}], "testbed.1.name"),
])
def test_a_bad_testbed_is_a_config_error_naming_the_field(spec, field):
    with pytest.raises(ConfigError) as info:
        resolve_testbed(spec)
    assert list(info.value.errors) == [field]


def test_zero_workers_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        resolve_testbed("local-3", workers=0)
    assert "workers" in info.value.errors


def test_a_testbed_without_a_cloud_device_has_no_server():
    edge_only = [{"profile": "jetson-nx"}, {"profile": "jetson-tx2"}]
    assert resolve_testbed(edge_only).server is None
    check_testbed_spec(edge_only)
    with pytest.raises(ValueError, match="cloud device"):
        check_testbed_spec(edge_only, need_server=True)


def test_describe_lists_devices_with_their_roles():
    rows = resolve_testbed("local-3").describe()
    assert [(r["name"], r["profile"], r["role"]) for r in rows] == [
        ("jetson-nx-01", "jetson-nx", "worker"),
        ("jetson-orin-nano-01", "jetson-orin-nano", "worker"),
        ("a6000-server", "a6000-server", "server"),
    ]
    assert rows[0]["compute_gflops"] == 150.0
