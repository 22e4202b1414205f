"""HAT's mechanisms on tiny random models: exactness (greedy and sampling), KV rollback,
parallel drafting, prompt chunking and the cloud's load."""
import itertools

import pytest
import torch
from scipy.stats import chisquare

from ml.algorithms.device_cloud_inference.adapter import Adapter
from ml.algorithms.device_cloud_inference.chunking import choose_chunk_size, predicted_ttft
from ml.algorithms.device_cloud_inference.cost import served_models
from ml.algorithms.device_cloud_inference.devices import CloudOnlyDevice, DraftingDevice, HATDevice
from ml.algorithms.device_cloud_inference.engine import Engine
from ml.algorithms.device_cloud_inference.partition import USplit
from ml.algorithms.device_cloud_inference.protocols import (Context, Trace, cloud_only,
                                                            device_cloud_sd, hat)
from ml.algorithms.device_cloud_inference.sampling import probabilities, verify
from ml.algorithms.device_cloud_inference.session import CloudMiddle, HATSession, generate
from ml.distributed.runtime import LocalWorker
from ml.models.transformer import DecoderConfig, DecoderLM, cache_length
from ml.testbed import resolve_testbed


def tiny_lm(vocab=16, layers=4, seed=0, scale=6.0) -> DecoderLM:
    """A random decoder whose weights are scaled up so its distributions are far from uniform."""
    torch.manual_seed(seed)
    model = DecoderLM(DecoderConfig(vocab_size=vocab, d_model=32, n_layers=layers, n_heads=2,
                                    d_ff=64, max_seq_len=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def perturbed_adapter(split: USplit, noise: float, seed: int = 1) -> Adapter:
    adapter = Adapter(split, 1).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(noise * torch.randn(p.shape, generator=g) * p.abs().mean())
    return adapter


def test_verify_greedy_accepts_the_target_argmax_prefix():
    p = probabilities(torch.tensor([[0., 5, 0], [5., 0, 0], [0., 0, 5]]), 0.0)
    q = probabilities(torch.tensor([[0., 5, 0], [0., 5, 0]]), 0.0)
    g = torch.Generator().manual_seed(0)
    verdict = verify([1, 1], q, p, g)
    assert (verdict.accepted, verdict.token) == (1, 0)  # second draft wrong: target's argmax
    assert verify([1, 0], probabilities(torch.tensor([[0., 5, 0], [5., 0, 0]]), 0.0), p, g) \
        .token == 2  # all accepted: bonus from the last row
    assert verify([1, 0], probabilities(torch.tensor([[0., 5, 0], [5., 0, 0]]), 0.0), p[:2],
                  g).token is None  # no bonus row: parallel drafting verifies the next one


@pytest.mark.parametrize("lookahead,chunk,window", [(0, None, None), (3, 5, None), (2, 7, 6)])
def test_greedy_hat_equals_the_full_model_token_for_token(lookahead, chunk, window):
    model = tiny_lm()
    split = USplit(model, 1, 1)
    adapter = perturbed_adapter(split, 0.5)
    prompt = torch.randint(0, 16, (23,), generator=torch.Generator().manual_seed(3)).tolist()
    reference = model.generate(torch.tensor([prompt]), 40)[0, 23:].tolist()
    out, session = generate(split, adapter, prompt, 40, 4, 0.0, torch.Generator().manual_seed(0),
                            lookahead=lookahead, chunk=chunk, draft_window=window)
    assert out == reference
    # Drafts were both accepted and rejected, so rollback was exercised.
    assert 0 < session.stats.accepted < session.stats.drafted
    # U-shaped split without speculation (gamma 0) is exact too.
    plain, _ = generate(split, None, prompt, 40, 0, 0.0, torch.Generator())
    assert plain == reference


def test_rollback_leaves_every_cache_at_the_accepted_prefix():
    model = tiny_lm()
    split = USplit(model, 1, 1)
    session = HATSession(split, perturbed_adapter(split, 3.0), list(range(10)), 0.0,
                         torch.Generator().manual_seed(0))
    cloud = CloudMiddle(split)
    session.input_pass()
    h_mid, _ = cloud.forward("d", session.hidden_states(0, 10), 0)
    p, _ = session.target_pass(h_mid, 0, 1)
    session.commit_first(p[-1])
    rejected = False
    for _ in range(20):
        while session.drafts < 4:
            session.draft_step()
        session.input_pass()
        h, pos = session.round_request()
        sent = len(session.seq)
        h_mid, _ = cloud.forward("d", h, pos)
        p, _ = session.target_pass(h_mid, pos, h.shape[1])
        new = session.finish_round(p, sent)
        committed = session.committed
        assert session.seq[-len(new):] == new and len(session.seq) == committed
        # Device caches end at the pending (last committed) token; the cloud's still holds
        # the whole round until the next request's position rolls it back.
        assert session.input_length == committed - 1
        assert cache_length(session.out_cache) == committed - 1
        assert session.draft_length <= committed - 1
        assert all(i < committed for i in session.q_rows)
        assert cache_length(cloud.caches["d"]) == sent >= committed - 1
        rejected = rejected or len(new) < 5
    assert rejected


def exact_joint(model: DecoderLM, prompt: list[int], steps: int) -> torch.Tensor:
    """The full model's probability of every sequence of ``steps`` tokens after ``prompt``."""
    vocab = model.cfg.vocab_size
    probs = torch.zeros([vocab] * steps, dtype=torch.float64)
    with torch.no_grad():
        for seq in itertools.product(range(vocab), repeat=steps):
            x = torch.tensor([prompt + list(seq)])
            logp = torch.log_softmax(model(x)[0][0].double(), -1)
            probs[seq] = sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(seq)).exp()
    return probs


def chi_square_p(samples: list[tuple[int, ...]], probs: torch.Tensor) -> float:
    """Pearson's test of ``samples`` against ``probs``; cells expecting < 5 are pooled."""
    counts = torch.zeros_like(probs)
    for s in samples:
        counts[s] += 1
    expected = probs.flatten() * len(samples)
    counts = counts.flatten()
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum().view(1)])
    expected = torch.cat([expected[~small], expected[small].sum().view(1)])
    return float(chisquare(observed.numpy(), expected.numpy()).pvalue)


def test_sampling_hat_draws_from_the_full_models_distribution():
    model = tiny_lm(vocab=4, scale=3.0, seed=2)
    split = USplit(model, 1, 1)
    adapter = perturbed_adapter(split, 2.0, seed=5)
    # Three tokens, one draft a round: token 2 is a verified draft or a residual sample, and
    # token 3 a verified look-ahead draft (parallel drafting) on every other sample.
    prompt, steps, n = [1, 3, 0, 2, 2], 3, 600
    target = exact_joint(model, prompt, steps)
    g = torch.Generator().manual_seed(0)
    hat_samples, drafted, accepted = [], 0, 0
    for i in range(n):
        out, session = generate(split, adapter, prompt, steps, 1, 1.0, g, lookahead=i % 2)
        hat_samples.append(tuple(out))
        drafted, accepted = drafted + session.stats.drafted, accepted + session.stats.accepted
    assert 0.2 < accepted / drafted < 0.95  # both branches of the verification ran
    p_value = chi_square_p(hat_samples, target)
    assert p_value > 1e-3, p_value
    # The test has power: the draft model's own samples (q, not p) fail it.
    draft_samples = []
    for _ in range(n):
        session = HATSession(split, adapter, list(prompt), 1.0, g)
        for _ in range(steps):
            session.draft_step()
        draft_samples.append(tuple(session.seq[len(prompt):]))
    p_draft = chi_square_p(draft_samples, target)
    assert p_draft < 1e-3, p_draft


#: Identical Jetson NX devices and a cloud slowed down so that a handful of devices load it.
SLOW_CLOUD = [{"profile": "jetson-nx"}, {"profile": "a6000-server", "compute_gflops": 300.0}]


def serve_all(protocol, workers, prompt_len=64, new_tokens=12, testbed="jetson30-a6000",
              **kw):
    model = kw.get("model") or tiny_lm()
    split = USplit(model, 1, 1)
    adapter = kw.get("adapter") or perturbed_adapter(split, 0.3)
    draft = tiny_lm(layers=1, seed=7)
    bed = resolve_testbed(testbed, workers=workers)
    served = served_models("llama2-7b", model, draft, 1, 1)
    engine = Engine(bed, cloud_share=kw.get("cloud_share", 1.0))
    cloud = CloudMiddle(split)
    traces = []
    for i, device in enumerate(bed.workers):
        prompt = torch.randint(0, 16, (prompt_len,),
                               generator=torch.Generator().manual_seed(i)).tolist()
        g = torch.Generator().manual_seed(i)
        role = {"hat": lambda: HATDevice(split, adapter, prompt, 0.0, g, kw.get("window", 16)),
                "u": lambda: HATDevice(split, None, prompt, 0.0, g, None),
                "cloud": lambda: CloudOnlyDevice(prompt),
                "sd": lambda: DraftingDevice(draft, prompt, 0.0, g)}[protocol]()
        ctx = Context(engine, served, device, prompt_len, new_tokens, 0.0, g,
                      LocalWorker(i, role))
        trace = Trace(device.name)
        traces.append(trace)
        gen = {"hat": lambda: hat(ctx, cloud, trace, 4, kw.get("chunk"),
                                  kw.get("parallel", True), True, kw.get("window", 16)),
               "u": lambda: hat(ctx, cloud, trace, 0, prompt_len, False, False),
               "cloud": lambda: cloud_only(ctx, model, trace),
               "sd": lambda: device_cloud_sd(ctx, model, 4, trace)}[protocol]()
        engine.start(device, gen)
    engine.run()
    return model, engine, traces, bed


@pytest.mark.parametrize("protocol", ["hat", "u", "cloud", "sd"])
def test_every_protocol_is_exact_and_the_cloud_batches_its_load(protocol):
    model, engine, traces, _ = serve_all(protocol, 1, testbed=SLOW_CLOUD)
    _, busy_engine, busy, _ = serve_all(protocol, 6, testbed=SLOW_CLOUD)
    prompt = torch.randint(0, 16, (64,), generator=torch.Generator().manual_seed(0)).tolist()
    assert traces[0].tokens == model.generate(torch.tensor([prompt]), 12)[0, 64:].tolist()
    assert busy[0].tokens == traces[0].tokens  # same request, same tokens under load
    # Six identical devices share batches, and their requests get slower on average.
    assert max(b.requests for b in busy_engine.batches) > 1
    assert sum(t.ttft_s for t in busy) / 6 > traces[0].ttft_s
    assert sum(t.tbt_s for t in busy) / 6 > traces[0].tbt_s


def test_a_smaller_cloud_share_congests_the_cloud_and_keeps_the_tokens():
    _, whole_engine, whole, _ = serve_all("cloud", 6)
    _, shared_engine, shared, _ = serve_all("cloud", 6, cloud_share=0.1)
    assert [t.tokens for t in shared] == [t.tokens for t in whole]
    # every batch takes ten times as long, so requests wait and decoding slows down
    busy = sum(b.end_s - b.start_s for b in shared_engine.batches)
    assert busy > 5 * sum(b.end_s - b.start_s for b in whole_engine.batches)
    assert sum(t.tbt_s for t in shared) > 5 * sum(t.tbt_s for t in whole)
    assert sum(t.ttft_s for t in shared) > sum(t.ttft_s for t in whole)
    with pytest.raises(ValueError, match="cloud_share"):
        Engine(resolve_testbed("jetson30-a6000"), cloud_share=0.0)


def test_uploads_queue_on_a_slow_cloud_link_and_outputs_do_not_change():
    # ten devices upload 64 hidden states of a 7B shape (8 KiB each) at once
    _, _, fast, _ = serve_all("u", 10)
    _, _, slow, bed = serve_all("u", 10, testbed="jetson30-a6000:server_mbps=10")
    assert [t.tokens for t in slow] == [t.tokens for t in fast]
    assert bed.ingress_delay_s["a6000-server"] > 0
    # 10 x 64 x 8 KiB through 10 Mbit/s: the last first token cannot come before ~4.2 s
    assert max(t.ttft_s for t in slow) > 10 * 64 * 8192 * 8 / 10e6
    assert max(t.ttft_s for t in fast) < 10 * 64 * 8192 * 8 / 10e6


def test_hat_uploads_hidden_states_never_tokens():
    model, engine, traces, bed = serve_all("hat", 1, chunk=16)
    d_bytes = served_models("llama2-7b", model, None, 1, 1).llm.hidden_bytes(1)
    up = {k.kind: b for k, b in bed.traffic.bytes.items() if k.direction == "up"}
    assert up["prefill"] == 64 * d_bytes  # one hidden state per prompt position
    stats = traces[0].stats
    # Each round uploads the pending token's and the drafts' hidden states.
    assert up["decode"] == (stats.drafted + stats.rounds) * d_bytes
    ups = [k for k in bed.traffic.messages if k.direction == "up"]
    assert sum(bed.traffic.messages[k] for k in ups if k.kind == "prefill") == 4  # 64 / 16


def test_parallel_drafting_uses_drafts_made_during_verification():
    model = tiny_lm(layers=3)  # middle = one block = the warm-started adapter: q == p
    split = USplit(model, 1, 1)
    exact = Adapter(split, 1).eval()

    def run(parallel):
        return serve_all("hat", 1, new_tokens=40, model=model, adapter=exact,
                         parallel=parallel, window=None)[2][0]
    serial, parallel = run(False), run(True)
    assert serial.stats.accepted == serial.stats.drafted  # the draft is the model itself
    assert parallel.stats.lookahead_used > 0
    assert parallel.tokens == serial.tokens
    assert parallel.tbt_s < serial.tbt_s


def test_chunk_size_is_chosen_per_device_and_predicts_the_emulated_ttft():
    model = tiny_lm()
    served = served_models("llama2-7b", model, None, 1, 1)
    bed = resolve_testbed("jetson30-a6000")
    tx2 = next(d for d in bed.workers if d.profile.name == "jetson-tx2")
    orin = next(d for d in bed.workers if d.profile.name == "jetson-agx-orin")
    size_tx2, t_tx2 = choose_chunk_size(1024, tx2, bed, served)
    size_orin, _ = choose_chunk_size(1024, orin, bed, served)
    assert size_tx2 != size_orin
    assert t_tx2 < 0.9 * predicted_ttft(1024, 1024, tx2, bed, served)  # pipelining pays off
    # More devices on the cloud make every chunk slower there, and the chunks smaller.
    assert predicted_ttft(1024, 64, orin, bed, served, load=30) > \
        predicted_ttft(1024, 64, orin, bed, served, load=1)
    assert choose_chunk_size(1024, orin, bed, served, load=30)[0] < size_orin
    # The prediction matches the emulation for one device (same schedule, same costs).
    _, _, traces, _ = serve_all("hat", 1, prompt_len=256)
    trace = traces[0]
    assert trace.predicted_ttft_s == pytest.approx(trace.ttft_s, rel=0.05)
