"""The family's role program: what crosses the wire, and distributed runs over local ranks
(real processes over torch.distributed on 127.0.0.1) against their emulated twins."""
import pytest
import torch

from ml import registry
from ml.algorithms.federated_fine_tuning import FEDLORA, FEDSPINE, HETLORA, PRUNE_THEN_FINETUNE
from ml.algorithms.federated_fine_tuning.structure import Structure
from ml.algorithms.federated_fine_tuning.training import LocalResult, Plan
from ml.distributed import launch_local, messages
from ml.distributed.errors import ProtocolError
from ml.reporting import MemoryReporter

TINY = {"base": "tiny", "workers": 3, "rounds": 2, "local_steps": 4, "batch_size": 8,
        "test_samples": 40, "testbed": "local-3", "seed": 5}
#: Each method with the knobs that make its strategy do something in two rounds.
CASES = {
    "fedspine": {"prune_every": 2, "target_sparsity": 0.4},
    "fedlora": {"prune_every": 2, "target_sparsity": 0.3},
    "hetlora": {},
    "prune-then-finetune": {"target_sparsity": 0.5},
}
#: Same seed, same computation order (every client's round runs on its own rank exactly as
#: in-process; the server aggregates in client order): the curves must agree to 1e-5 (they
#: agree bit for bit on one host).
CURVES = ("accuracy", "loss", "train_loss", "sim_time_s", "sparsity", "params", "flops",
          "memory_bytes")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """The ``tiny`` pre-trained base, cached where the ranks (child processes) find it."""
    from ml.algorithms.federated_fine_tuning.task import load_base

    mp = pytest.MonkeyPatch()
    mp.setenv("ESTUARY_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    torch.set_num_threads(1)
    load_base("tiny")
    yield
    mp.undo()


def test_every_method_of_the_family_has_a_role_program():
    for method in (FEDLORA, FEDSPINE, HETLORA, PRUNE_THEN_FINETUNE):
        assert method.distributed and method.program.exposed == frozenset({"train"})
        assert registry.get(method.name).describe()["distributed"] is True


def test_adapters_and_the_pruning_plan_cross_as_tensors_and_json():
    structure = Structure(((0, 2), (1,)), ((0, 5, 7), (3,)))
    state = {"decoder.blocks.0.attn.q_proj.lora_A": torch.randn(4, 8),
             "decoder.blocks.0.attn.q_proj.lora_B": torch.randn(8, 4)}
    head = {"weight": torch.randn(5, 8), "bias": torch.randn(5)}
    result = LocalResult(state=state, classifier=head, structure=structure, rank=4, samples=32,
                         flops=1.5e6, train_loss=1.25, loss_before=1.5, loss_after=1.0,
                         sparsity_before=0.0, sparsity_after=0.25, update_norm=0.5)
    tensors: list = []
    packed = messages.pack([Plan(4, 0.25, True, 0.1), structure, result], tensors)
    header = messages.decode_header(messages.encode_header({"op": "call", "args": packed}))
    # The tensors travel apart from the header; the header holds only JSON.
    assert len(tensors) == 4 and "lora_A" in str(header) and "tensor" in str(header)
    plan, got_structure, got = messages.unpack(header["args"], tensors)
    assert plan == Plan(4, 0.25, True, 0.1)
    # Lists from JSON become tuples again: a structure received is hashable and equal.
    assert got_structure == structure and hash(got_structure) == hash(structure)
    assert got.structure == structure and got.rank == 4 and got.flops == 1.5e6
    for key in state:
        assert torch.equal(got.state[key], state[key])
    with pytest.raises(ProtocolError):  # only registered types cross
        messages.pack(object(), [])


def _emulated(method: str, config: dict):
    entry = registry.get(method)
    reporter = MemoryReporter()
    return entry.run(entry.parse_config(config), reporter), reporter


def _values(reporter, name):
    return [(p.step, p.value) for p in reporter.series(name)]


@pytest.mark.parametrize("method", sorted(CASES))
def test_three_local_ranks_reproduce_the_emulated_run(tiny_base, method):
    config = {**TINY, **CASES[method]}
    result, points = launch_local(method, config, 3, timeout_s=60)
    twin, twin_points = _emulated(method, config)
    assert result["execution"] == "distributed"
    names = {p.name for p in twin_points.points}
    per_client = sorted(n for n in names if n.split("/")[0] in (
        "sparsity", "rank", "ratio", "reward", "completion_time_s", "memory_bytes",
        "inference_latency_ms") and "/" in n)
    assert per_client
    for name in (*CURVES, *per_client):
        got, want = _values(points, name), _values(twin_points, name)
        assert [s for s, _ in got] == [s for s, _ in want] and got, name
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-5), name
    # The clients end with the same structures (the pruning plans agree).
    assert result["clients"] == twin["clients"]
    # Measured payload == the emulated count (adapters and head, fp32), per round.
    assert _values(points, "traffic_bytes") == _values(twin_points, "traffic_bytes")
    assert _values(points, "traffic_bytes/lora") == _values(twin_points, "traffic_bytes/lora")
    # Framing (JSON headers: tensor specs, the structure, the plan) is counted apart.
    assert 0 < result["framing_bytes"] < 5000 * result["messages"]
    assert [s["rank"] for s in result["placement"]] == [0, 1, 2]
    assert len(points.series("round_time_s")) == config["rounds"]
    assert points.series("sim_round_time_s")


def test_a_cold_base_cache_draws_the_same_run_as_a_warm_one(tmp_path, monkeypatch):
    # A rank that pre-trains the base (cold cache) must start from the same initial adapters
    # and head as one that loads it, or a distributed run would not reproduce its twin.
    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path))
    config = {**TINY, "rounds": 1}
    _, cold = _emulated("fedlora", config)
    _, warm = _emulated("fedlora", config)
    for name in ("train_loss", "accuracy", "loss"):
        assert _values(cold, name) == _values(warm, name), name
