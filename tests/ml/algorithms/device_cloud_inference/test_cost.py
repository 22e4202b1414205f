"""HAT's clock and adapter: FLOP counts against torch's counter, the roofline, distillation."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ml.algorithms.device_cloud_inference.adapter import (Adapter, DistillSettings,
                                                          continuation_batches, distill_adapter,
                                                          draft_quality,
                                                          teacher_and_student_logits)
from ml.algorithms.device_cloud_inference.cost import (LLAMA2_7B, Op, Pass, ServedModels,
                                                       batch_seconds, served_models, shape_of)
from ml.algorithms.device_cloud_inference.partition import USplit
from ml.data.text import SequenceDataset
from ml.models.transformer import DecoderConfig, DecoderLM
from ml.testbed import resolve_testbed


def test_linear_flops_match_torchs_counter():
    model = DecoderLM(DecoderConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=2, d_ff=96,
                                    max_seq_len=32)).eval()
    shape = shape_of(model)
    x = torch.randint(0, 64, (1, 20))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    counted = sum(v for k, v in counter.get_flop_counts()["Global"].items()
                  if "attention" not in str(k))
    assert counted == 3 * shape.layer_linear_flops(20) + shape.head_flops(20)


def test_roofline_reads_weights_once_per_batch():
    bed = resolve_testbed("jetson30-a6000")
    cloud = bed.require_server()
    served = ServedModels(LLAMA2_7B, None, 1, 1)
    one = served.charge(Op("middle", 1, 100))
    single = batch_seconds(cloud, [one])
    # One token is memory-bound: 30 devices' decoding steps cost far less than 30 times one.
    assert batch_seconds(cloud, [one] * 30) < 0.2 * 30 * single
    # Prefill is compute-bound: FLOPs add up.
    big = Pass(LLAMA2_7B, 30, 2048, 0)
    assert batch_seconds(cloud, [big] * 4) > 3.9 * batch_seconds(cloud, [big])


def test_distillation_brings_the_draft_closer_to_the_llm():
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(vocab_size=32, d_model=32, n_layers=4, n_heads=2, d_ff=64,
                                    max_seq_len=32)).eval()
    tokens = torch.arange(4000) % 29  # a periodic text the LM does not know yet
    split = USplit(model, 1, 1)
    adapter = Adapter(split, 1)
    with torch.no_grad():  # start from a poor guess
        for p in adapter.parameters():
            p.mul_(0.1)
    before = draft_quality(split, adapter, tokens, seq_len=16, max_windows=16)
    info = distill_adapter(split, adapter, tokens, DistillSettings(steps=40, batch_size=8,
                                                                   seq_len=16, lr=1e-2))
    after = draft_quality(split, adapter, tokens, seq_len=16, max_windows=16)
    assert info["distill_loss_final"] < info["distill_loss_first"]
    assert after["draft_expected_acceptance"] > before["draft_expected_acceptance"]
    assert after["llm_val_perplexity"] == before["llm_val_perplexity"]  # the LLM stays frozen


def test_long_window_distillation_reads_the_whole_window_and_learns():
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(vocab_size=32, d_model=32, n_layers=4, n_heads=2, d_ff=64,
                                    max_seq_len=64)).eval()
    tokens = torch.arange(4000) % 29
    split = USplit(model, 1, 1)
    adapter = Adapter(split, 1)
    # The teacher is the full model over the whole window; the student covers its last positions.
    x = tokens[:40].unsqueeze(0)
    p_logits, q_logits, h_mid, h_ad = teacher_and_student_logits(split, adapter, x, 24)
    with torch.no_grad():
        assert torch.allclose(p_logits, model(x)[0][:, 24:], atol=1e-5)
    assert q_logits.shape == p_logits.shape and h_mid.shape == h_ad.shape == (1, 16, 32)
    with torch.no_grad():
        for p in adapter.parameters():
            p.mul_(0.1)
    before = draft_quality(split, adapter, tokens, seq_len=16, max_windows=16, context=48)
    info = distill_adapter(split, adapter, tokens, DistillSettings(steps=40, batch_size=8,
                                                                   seq_len=16, context=48, lr=1e-2))
    after = draft_quality(split, adapter, tokens, seq_len=16, max_windows=16, context=48)
    assert info["distill_loss_final"] < info["distill_loss_first"]
    assert after["draft_expected_acceptance"] > before["draft_expected_acceptance"]


def test_distillation_windows_end_in_the_llms_own_greedy_continuation():
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(vocab_size=32, d_model=32, n_layers=4, n_heads=2, d_ff=64,
                                    max_seq_len=64)).eval()
    data = SequenceDataset(torch.arange(4000) % 29, 48)
    settings = DistillSettings(batch_size=4, seq_len=16, context=48, generated_tokens=6,
                               generated_batches=3)
    batches = continuation_batches(model, data, settings, torch.Generator().manual_seed(0))
    assert len(batches) == 3
    for x in batches:
        assert 16 <= x.shape[1] <= 48 and x.shape[0] == 4
        with torch.no_grad():
            greedy = model(x)[0].argmax(-1)
        # each of the last 6 tokens is the full model's argmax after what precedes it
        assert torch.equal(x[:, -6:], greedy[:, -7:-1])
        # and the prompt before them is corpus text (here: counting mod 29)
        prompt = x[:, :-6]
        assert torch.equal(prompt[:, 1:] % 29, (prompt[:, :-1] + 1) % 29)
    assert continuation_batches(model, data, DistillSettings(generated_fraction=0.0),
                                torch.Generator()) == []


def test_proportional_clock_charges_each_part_at_the_served_models_share():
    model = DecoderLM(DecoderConfig(vocab_size=64, d_model=32, n_layers=12, n_heads=2, d_ff=96,
                                    max_seq_len=32))
    served = served_models("llama2-7b-proportional", model, None, 1, 1, adapter_layers=1)
    assert served.llm is LLAMA2_7B
    assert served.input_layers == served.output_layers == served.adapter_layers == 32 / 12
    assert served.middle_layers == pytest.approx(32 - 2 * 32 / 12)
    one = served.charge(Op("adapter", 1, 10))
    plain = served_models("llama2-7b", model, None, 1, 1).charge(Op("adapter", 1, 10))
    assert one.flops == pytest.approx(32 / 12 * plain.flops)
    assert one.weight_bytes == pytest.approx(32 / 12 * plain.weight_bytes)


def test_a_share_of_the_cloud_scales_its_batch_time():
    cloud = resolve_testbed("jetson30-a6000").require_server()
    passes = [Pass(LLAMA2_7B, 30, 64, 100)] * 3
    assert batch_seconds(cloud, passes, share=0.25) == 4 * batch_seconds(cloud, passes)
