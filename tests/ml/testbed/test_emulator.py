"""The emulator's time model: compute, transfers, barriers and traffic counters."""
import dataclasses

import pytest

from ml.testbed import EmulatedDevice, Testbed, TrafficKey
from ml.testbed.emulator import LinkSchedule
from ml.testbed.profiles import DeviceProfile

EDGE = DeviceProfile("edge-test", "edge", compute_gflops=100.0, memory_mib=1024,
                     uplink_mbps=10.0, downlink_mbps=20.0, rtt_ms=40.0, accelerator="-")
CLOUD = DeviceProfile("cloud-test", "cloud", compute_gflops=10_000.0, memory_mib=1024,
                      uplink_mbps=1000.0, downlink_mbps=1000.0, rtt_ms=2.0, accelerator="-")


def make_testbed(edges=2):
    workers = [EmulatedDevice(f"edge-{i}", EDGE) for i in range(edges)]
    return Testbed(workers, EmulatedDevice("server", CLOUD))


def assert_clock_is_sum_of_buckets(device):
    parts = device.compute_s + device.sending_s + device.receiving_s + device.waiting_s
    assert device.clock_s == pytest.approx(parts, abs=1e-12)


def test_compute_takes_flops_over_rate():
    tb = make_testbed()
    edge = tb.workers[0]
    assert tb.compute(edge, 5e9) == pytest.approx(0.05)  # 5 GFLOP at 100 GFLOP/s
    assert edge.clock_s == pytest.approx(0.05)
    assert edge.compute_s == pytest.approx(0.05)


def test_transfer_is_half_rtt_plus_bytes_over_the_slower_end():
    tb = make_testbed()
    edge, server = tb.workers[0], tb.server
    nbytes = 1_000_000
    # up: edge uplink 10 Mbit/s is the bottleneck; the link's RTT is the larger one (40 ms)
    expected = 0.040 / 2 + nbytes * 8 / 10e6
    assert tb.transfer(edge, server, nbytes, "model") == pytest.approx(expected)
    assert server.clock_s == pytest.approx(expected)
    # the sender is busy while its own uplink serialises the bytes
    assert edge.clock_s == pytest.approx(nbytes * 8 / 10e6)
    # down: the edge's 20 Mbit/s downlink is the bottleneck
    down = tb.transfer_time(server, edge, nbytes)
    assert down == pytest.approx(0.020 + nbytes * 8 / 20e6)


def test_a_receiver_never_receives_before_the_sender_sent():
    tb = make_testbed()
    edge, server = tb.workers[0], tb.server
    tb.compute(edge, 100e9)  # edge is busy for 1 s before it sends
    arrival = tb.send(edge, server, 1000, "features")
    assert arrival == pytest.approx(1.0 + tb.transfer_time(edge, server, 1000))
    tb.receive(server, arrival)
    assert server.clock_s == pytest.approx(arrival)
    assert server.receiving_s == pytest.approx(arrival)


def test_a_receiver_that_is_later_than_the_arrival_keeps_its_clock():
    tb = make_testbed()
    edge, server = tb.workers[0], tb.server
    tb.compute(server, 1e14)  # 10 s
    tb.transfer(edge, server, 1000, "features")
    assert server.clock_s == pytest.approx(10.0)
    assert server.receiving_s == 0.0


def test_a_server_fans_out_in_parallel_limited_by_its_own_uplink():
    tb = make_testbed(edges=2)
    server = tb.server
    nbytes = 10_000_000
    for edge in tb.workers:
        tb.transfer(server, edge, nbytes, "model")
    serialise = nbytes * 8 / 1000e6
    assert server.clock_s == pytest.approx(2 * serialise)
    first, second = tb.workers
    assert first.clock_s == pytest.approx(tb.transfer_time(server, first, nbytes))
    assert second.clock_s == pytest.approx(serialise + tb.transfer_time(server, second, nbytes))


def test_uploads_within_the_receivers_downlink_do_not_contend():
    # 50 edges x 10 Mbit/s = 500 Mbit/s into a 1 Gbit/s downlink: every message as if alone
    tb = make_testbed(edges=50)
    arrivals = [tb.send(edge, tb.server, 1_000_000, "features") for edge in tb.workers]
    alone = tb.transfer_time(tb.workers[0], tb.server, 1_000_000)
    assert arrivals == pytest.approx([alone] * 50)
    assert tb.ingress_delay_s["server"] == 0.0


def test_uploads_beyond_the_receivers_downlink_queue_on_it():
    # 10 edges x 10 Mbit/s into a 20 Mbit/s server link: the link, not the uplinks, sets the pace
    slow_server = DeviceProfile("ap", "cloud", 10_000.0, 1024, uplink_mbps=20.0,
                                downlink_mbps=20.0, rtt_ms=2.0, accelerator="-")
    workers = [EmulatedDevice(f"edge-{i}", EDGE) for i in range(10)]
    tb = Testbed(workers, EmulatedDevice("server", slow_server))
    nbytes = 1_000_000
    arrivals = [tb.send(edge, tb.server, nbytes, "features") for edge in workers]
    latency = tb.latency_s(workers[0], tb.server)
    # the downlink drains 8 Mbit in 0.4 s per message, one after another
    assert max(arrivals) == pytest.approx(latency + 10 * nbytes * 8 / 20e6)
    assert sorted(arrivals)[0] == pytest.approx(latency + nbytes * 8 / 10e6)
    assert tb.ingress_delay_s["server"] > 0
    for arrival in arrivals:
        tb.receive(tb.server, arrival)
    assert tb.server.clock_s == pytest.approx(max(arrivals))
    assert_clock_is_sum_of_buckets(tb.server)


def test_a_link_schedule_fills_the_earliest_gap_that_fits():
    link = LinkSchedule()
    assert link.reserve(0.0, 1.0) == 1.0
    assert link.reserve(3.0, 1.0) == 4.0
    assert link.reserve(0.5, 1.0) == 2.0      # queued behind [0, 1), fits in the gap [1, 3)
    assert link.reserve(0.0, 1.5) == 5.5      # no gap of 1.5 before 4.0
    assert link.reserve(2.0, 1.0) == 3.0      # touching intervals merge
    assert (link.starts, link.ends) == ([0.0], [5.5])
    link.forget_before(6.0)
    assert len(link) == 0


def test_barrier_waits_for_the_slowest_and_books_waiting_time():
    tb = make_testbed(edges=2)
    fast, slow = tb.workers
    tb.compute(fast, 10e9)   # 0.1 s
    tb.compute(slow, 100e9)  # 1.0 s
    t = tb.barrier([fast, slow, tb.server])
    assert t == pytest.approx(1.0) == tb.now()
    assert fast.waiting_s == pytest.approx(0.9)
    assert slow.waiting_s == 0.0
    assert tb.server.waiting_s == pytest.approx(1.0)
    for device in tb.devices:
        assert device.clock_s == pytest.approx(1.0)
        assert_clock_is_sum_of_buckets(device)


def test_traffic_is_counted_per_link_direction_and_kind():
    tb = make_testbed(edges=2)
    a, b = tb.workers
    tb.transfer(tb.server, a, 100, "model")
    tb.transfer(a, tb.server, 30, "features")
    tb.transfer(a, tb.server, 30, "features")
    tb.transfer(tb.server, a, 7, "gradients")
    tb.transfer(a, b, 5, "model")
    ledger = tb.traffic
    assert ledger.bytes[TrafficKey("edge-0", "server", "up", "features")] == 60
    assert ledger.messages[TrafficKey("edge-0", "server", "up", "features")] == 2
    assert ledger.bytes[TrafficKey("edge-0", "edge-1", "peer", "model")] == 5
    assert ledger.total() == 172
    assert ledger.by_kind() == {"features": 60, "gradients": 7, "model": 105}
    assert ledger.by_direction() == {"down": 107, "peer": 5, "up": 60}
    assert ledger.of_device("edge-0") == {"sent": 65, "received": 107}
    for device in tb.devices:
        assert_clock_is_sum_of_buckets(device)


def test_measured_compute_scales_host_time_by_relative_speed():
    tb = Testbed([EmulatedDevice("edge", EDGE)], None, host_gflops=50.0)
    assert tb.compute_measured(tb.workers[0], 2.0) == pytest.approx(1.0)  # twice the host's rate
    with pytest.raises(ValueError, match="host_gflops"):
        make_testbed().compute_measured(make_testbed().workers[0], 1.0)


def test_device_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        Testbed([EmulatedDevice("x", EDGE), EmulatedDevice("x", EDGE)], None)


class ForgetsEveryTime(Testbed):
    """The emulator as it was: every message forgets the receiver's settled intervals."""

    def through_downlink(self, dst, first_bit_s, alone_s, nbytes, settled_s=None):
        if settled_s is None:
            settled_s = min(d.clock_s for d in self.devices)
        return super().through_downlink(dst, first_bit_s, alone_s, nbytes, settled_s)


def test_forgetting_settled_intervals_lazily_changes_no_arrival():
    import random

    rng = random.Random(3)
    beds = [ForgetsEveryTime(*make_parts(40)), Testbed(*make_parts(40))]
    arrivals = [[], []]
    for _ in range(5):  # rounds: fan out, compute, upload, barrier
        plan = [(w, rng.uniform(1e8, 5e9), rng.randrange(1, 4_000_000)) for w in range(40)]
        for bed, out in zip(beds, arrivals):
            for w, flops, nbytes in plan:
                out.append(bed.transfer(bed.server, bed.workers[w], nbytes))
                bed.compute(bed.workers[w], flops)
                out.append(bed.send(bed.workers[w], bed.server, nbytes))
            bed.barrier(bed.devices)
    assert arrivals[0] == arrivals[1]  # exactly, not approximately
    assert beds[1].ingress_delay_s["server"] > 0  # the uploads did queue


def make_parts(edges):
    # A server whose downlink (50 Mbit/s) is below the sum of the edges' uplinks: uploads queue.
    server = EmulatedDevice("server", dataclasses.replace(CLOUD, downlink_mbps=50.0))
    return [EmulatedDevice(f"edge-{i}", EDGE) for i in range(edges)], server
