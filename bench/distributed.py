"""Distributed runs against their emulated twins, and shaped links against their profiles.

Part 1, methods: the same fedavg, split-learning (splitfed, adasfl, mergesfl, parallelsfl),
fedspine, cross-region (diloco, streaming-diloco, cocodc; two regions, one rank each, the emulated
clock charged for the real model) and device-cloud inference (hat and, in the full mode, its three
baselines; a round = every device's request served once) configs run emulated (one process) and
distributed over 3 local ranks (ParallelSFL: one per worker and the PS; real processes over
torch.distributed on 127.0.0.1, via ``launch_local``), unshaped and shaped (each rank applies its
profile's uplink and RTT to what it sends). Per round: wall time (median of the rounds, the
emulated run's is its wall time over the rounds), payload bytes and framing bytes, the emulated
clock's prediction of the round time, and the distributed/emulated wall ratio; for the shaped run,
the error of the emulator's prediction against the measured round time.

Part 2, links: two ranks over the transport; rank 1 shaped as a Jetson NX (40 Mbit/s up, 15 ms
RTT) or not. One-way latency = half the median round trip of tiny messages (both ranks shaped
alike); throughput = (K-1)·S / (t_K - t_1), where t_k is the time to receive a burst of k
messages of S bytes (the request's latency cancels out). Goal: shaped figures within 10% of the
profile.

    python bench/distributed.py [--quick] [--methods splitfed adasfl ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ml import registry  # noqa: E402
from ml.cli import format_table  # noqa: E402
from ml.distributed import LinkShape, launch_local  # noqa: E402
from ml.reporting import MemoryReporter  # noqa: E402

PROFILE = {"profile": "jetson-nx", "name": "jetson-nx-01"}
#: Generous: under `nice -n 19` on a shared machine a rank may need long to start.
TIMEOUT_S = 180.0


def configs(quick: bool) -> dict[str, dict]:
    common = ({"dataset": "digits", "workers": 4, "rounds": 3} if quick else
              {"dataset": "digits", "workers": 6, "rounds": 6})
    common.update(testbed="local-3", seed=0, eval_every=common["rounds"])
    fine_tuning = {"base": "tiny" if quick else "small", "workers": common["workers"],
                   "rounds": common["rounds"], "local_steps": 8 if quick else 20,
                   "prune_every": 4 if quick else 10, "batch_size": 16, "testbed": "local-3",
                   "seed": 0, "eval_every": common["rounds"]}
    regions = {"workers": 2, "rounds": 3 if quick else 6, "inner_steps": 10, "eval_every": 10,
               "batch_size": 8, "seq_len": 32, "d_model": 32, "layers": 2, "eval_windows": 32,
               "emulated_params": None, "emulated_tokens_per_step": None, "seed": 0}
    split = {**common, "local_iterations": 10 if quick else 20, "batch_size": 32}
    # Device-cloud inference: tiny cached models, the served model's own shape on the clock;
    # a "round" is every device's request served once.
    serving = {"workers": 4, "prompt_tokens": 32 if quick else 48,
               "new_tokens": 8 if quick else 16, "pretrain_steps": 15, "context_tokens": 64,
               "extend_steps": 3, "distill_steps": 5, "draft_steps": 5,
               "served_model": "pretrained", "testbed": "local-3", "seed": 0}
    serving_methods = ("hat",) if quick else ("hat", "u-shaped-inference",
                                              "cloud-only-inference", "device-cloud-sd")
    return {"fedavg": {**common, "batch_size": 32},
            "splitfed": split,
            "adasfl": split,
            "mergesfl": {**split, "clients_per_round": 0.75},
            "parallelsfl": {**split, "clusters": 2},
            "fedspine": fine_tuning,
            "diloco": regions,
            # τ and N fixed: from this WAN, the real tiny model's reduce would take thousands
            # of its emulated (H100) steps and never arrive within the run
            "streaming-diloco": {**regions, "fragments": 2, "overlap_steps": 2},
            "cocodc": {**regions, "fragments": 2, "overlap_steps": 2,
                       "transmissions_per_round": 4},
            **{m: own_keys(m, serving) for m in serving_methods}}


def own_keys(method: str, config: dict) -> dict:
    fields = registry.get(method).config.model_fields
    return {k: v for k, v in config.items() if k in fields}


def emulated_round_time(reporter: MemoryReporter, rounds: int) -> float:
    """The emulated clock's round time: per-round points where the method reports them,
    else (cross-region, which reports at evaluations) its final clock over the rounds."""
    if reporter.series("round_time_s"):
        return median_of(reporter, "round_time_s")
    return reporter.last("sim_time_s") / rounds


def world_size(method: str, config: dict) -> int:
    """Ranks of the distributed run: 3 (a coordinator and two worker agents), ParallelSFL one
    per worker plus the PS, so that every member <-> top worker exchange crosses a real link."""
    return config["workers"] + 1 if method == "parallelsfl" else 3


def median_of(reporter: MemoryReporter, name: str) -> float:
    return statistics.median(p.value for p in reporter.series(name))


def emulated_figures(method: str, config: dict, result: dict,
                     reporter: MemoryReporter) -> tuple[float, float, float]:
    """(wall s, payload bytes, emulated s) per round of an emulated run."""
    if registry.get(method).family == "device-cloud-inference":  # one round: every request
        final = result["final"]
        return result["wall_time_s"], final["traffic_bytes"], final["sim_time_s"]
    rounds = config["rounds"]
    return (result["wall_time_s"] / rounds, result["final"]["traffic_bytes"] / rounds,
            emulated_round_time(reporter, rounds))


def distributed_figures(method: str, config: dict, result: dict,
                        reporter: MemoryReporter) -> tuple[float, float, float, float]:
    """(wall s, payload bytes, framing bytes, emulated s) per round of a distributed run."""
    if registry.get(method).family == "device-cloud-inference":
        final = result["final"]
        return (final["wall_serving_s"], final["measured_traffic_bytes"],
                final["framing_bytes"], final["sim_time_s"])
    rounds = config["rounds"]
    return (median_of(reporter, "round_time_s"), result["traffic_bytes"] / rounds,
            result["framing_bytes"] / rounds, median_of(reporter, "sim_round_time_s"))


def method_rows(quick: bool, only: list[str] | None = None) -> list[tuple]:
    rows = []
    for method, config in configs(quick).items():
        if only and method not in only:
            continue
        entry = registry.get(method)
        reporter = MemoryReporter()
        result = entry.run(entry.parse_config(config), reporter)
        emu_wall, emu_bytes, emu_pred = emulated_figures(method, config, result, reporter)
        rows.append((method, "emulated", f"{emu_wall:.3f}", f"{emu_bytes:,.0f}", "-",
                     f"{emu_pred:.3f}", "1.00", "-"))
        for shaped in (False, True):
            res, points = launch_local(method, config, world_size(method, config), shape=shaped,
                                       timeout_s=TIMEOUT_S)
            wall, payload, framing, pred = distributed_figures(method, config, res, points)
            error = f"{(pred - wall) / wall:+.0%}" if shaped else "-"
            rows.append((method, "distributed, shaped" if shaped else "distributed",
                         f"{wall:.3f}", f"{payload:,.0f}", f"{framing:,.0f}", f"{pred:.3f}",
                         f"{wall / emu_wall:.2f}", error))
    return rows


# -- link probe ---------------------------------------------------------------------------------

def probe_child(directory: Path, rank: int, shaped: bool, size: int, bursts: int,
                pings: int) -> None:
    from ml.distributed.transport import Peer, Rendezvous, Transport

    spec = json.loads((directory / "spec.json").read_text())
    port = 0
    if rank == 1:
        while not (directory / "port").exists():
            time.sleep(0.01)
        port = int((directory / "port").read_text())
    rendezvous = Rendezvous("127.0.0.1", port, spec["prefix"], TIMEOUT_S)
    peers = [Peer(0, "probe-0", "probe-0"), Peer(1, "probe-1", "probe-1")]
    shape = LinkShape.of_profile(PROFILE) if shaped else None
    def store_ready(port: int) -> None:
        (directory / "port.tmp").write_text(str(port))
        (directory / "port.tmp").rename(directory / "port")

    transport = Transport(peers, rank, rendezvous, shape=shape, on_store_ready=store_ready)
    payload = torch.zeros(size // 4)
    if rank == 1:
        while True:
            message = transport.recv(0)
            op = message.header["op"]
            if op == "ping":
                transport.send(0, {"op": "pong"})
            elif op == "burst":
                for _ in range(message.header["k"]):
                    transport.send(1 - rank, {"op": "data"}, [payload])
            else:
                transport.send(0, {"op": "bye"})
                transport.close()
                os._exit(0)
    rtts = []
    for _ in range(pings):
        start = time.perf_counter()
        transport.send(1, {"op": "ping"})
        transport.recv(1)
        rtts.append(time.perf_counter() - start)
    times = {}
    for k in (1, bursts):
        start = time.perf_counter()
        transport.send(1, {"op": "burst", "k": k})
        for _ in range(k):
            transport.recv(1)
        times[k] = time.perf_counter() - start
    transport.send(1, {"op": "end"})
    transport.recv(1)
    latency = statistics.median(rtts) / 2
    throughput = (bursts - 1) * size / (times[bursts] - times[1])
    (directory / "result.json").write_text(json.dumps({"latency_s": latency,
                                                       "throughput": throughput}))
    transport.close()
    os._exit(0)


def probe(shaped: bool, quick: bool) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="estuary-probe-"))
    (directory / "spec.json").write_text(json.dumps({"prefix": f"probe-{os.getpid()}/"}))
    size, bursts, pings = (1_000_000, 6, 15) if quick else (1_000_000, 10, 40)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--probe", str(directory), str(rank),
                               str(int(shaped)), str(size), str(bursts), str(pings)], env=env)
             for rank in (0, 1)]
    for proc in procs:
        proc.wait(timeout=900)
    return json.loads((directory / "result.json").read_text())


def link_rows(quick: bool) -> list[tuple]:
    shape = LinkShape.of_profile(PROFILE)
    rows = []
    for shaped in (False, True):
        got = probe(shaped, quick)
        if shaped:
            lat_err = f"{got['latency_s'] / shape.latency_s - 1:+.1%}"
            thr_err = f"{got['throughput'] / shape.uplink_bytes_per_s - 1:+.1%}"
            profile = (f"{shape.latency_s * 1e3:.2f}", f"{shape.uplink_bytes_per_s / 1e6:.2f}")
        else:
            lat_err = thr_err = "-"
            profile = ("-", "-")
        rows.append(("jetson-nx" if shaped else "loopback, unshaped",
                     f"{got['latency_s'] * 1e3:.2f}", profile[0], lat_err,
                     f"{got['throughput'] / 1e6:.2f}", profile[1], thr_err))
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        d, rank, shaped, size, bursts, pings = sys.argv[2:8]
        torch.set_num_threads(1)
        probe_child(Path(d), int(rank), shaped == "1", int(size), int(bursts), int(pings))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small configs (about a minute)")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help="only these methods' rows (and no link rows)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    links = [] if args.methods else link_rows(args.quick)
    methods = method_rows(args.quick, args.methods)
    if links:
        print(format_table(("link", "latency ms", "profile", "error", "throughput MB/s",
                            "profile", "error"), links))
        print()
    print(format_table(("method", "run", "wall s/round", "payload B/round", "framing B/round",
                        "emulated s/round", "wall / emulated wall", "emulator error"), methods))


if __name__ == "__main__":
    main()
