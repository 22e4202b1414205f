"""The pieces of the outer loop: fragments, outer Nesterov SGD, delay compensation and
quantisation of pseudo-gradients."""
from __future__ import annotations

import pytest
import torch

from ml.algorithms.cross_region.compensation import compensated_fragment
from ml.algorithms.cross_region.fragments import make_fragments, model_units
from ml.algorithms.cross_region.outer_optimizer import GlobalFragment
from ml.algorithms.cross_region.quantization import payload_bytes, quantize_dequantize
from ml.models.transformer import DecoderConfig, DecoderLM


def decoder(layers: int = 4) -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(DecoderConfig(d_model=16, n_layers=layers, n_heads=2, d_ff=48,
                                   max_seq_len=16))


class TestFragments:
    def test_units_are_embedding_each_block_norm_and_head(self):
        units = model_units(decoder(layers=4))
        assert [u[0].split(".")[0] for u in units] == ["embed", *["blocks"] * 4, "norm", "head"]
        assert [u[0] for u in units[1:5]] == [f"blocks.{i}.attn_norm.weight" for i in range(4)]

    def test_strided_deals_units_round_robin(self):
        frags = make_fragments(decoder(layers=4), 4, "strided")
        owners = [{name.split(".")[0] + (f".{name.split('.')[1]}" if name.startswith("blocks")
                   else "") for name in f.names} for f in frags]
        assert owners == [{"embed", "blocks.3"}, {"blocks.0", "norm"}, {"blocks.1", "head"},
                          {"blocks.2"}]

    def test_every_parameter_is_in_exactly_one_fragment(self):
        model = decoder(layers=4)
        for pattern in ("strided", "sequential"):
            frags = make_fragments(model, 3, pattern)
            names = [n for f in frags for n in f.names]
            assert sorted(names) == sorted(n for n, _ in model.named_parameters())
            assert sum(f.numel for f in frags) == sum(p.numel() for p in model.parameters())

    def test_more_fragments_than_units_is_an_error(self):
        with pytest.raises(ValueError, match="layer units"):
            make_fragments(decoder(layers=2), 6)


class TestOuterNesterov:
    def test_matches_torch_sgd_with_nesterov_on_the_pseudo_gradient(self):
        torch.manual_seed(1)
        start = torch.randn(5)
        ours = GlobalFragment([start], lr=0.7, momentum=0.9)
        theirs = torch.nn.Parameter(start.clone())
        sgd = torch.optim.SGD([theirs], lr=0.7, momentum=0.9, nesterov=True)
        for _ in range(4):
            local = [ours.params[0] - torch.randn(5) * 0.1]
            delta = ours.pseudo_gradient(local)
            theirs.grad = delta[0].clone()
            sgd.step()
            ours.step(delta)
            torch.testing.assert_close(ours.params[0], theirs.detach())

    def test_lr_1_without_momentum_lands_on_the_average_of_the_replicas(self):
        glob = GlobalFragment([torch.zeros(3)], lr=1.0, momentum=0.0)
        replicas = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])]
        deltas = [glob.pseudo_gradient([r])[0] for r in replicas]
        glob.step([(deltas[0] + deltas[1]) / 2])
        torch.testing.assert_close(glob.params[0], torch.tensor([2.0, 2.0, 2.0]))


class TestDelayCompensation:
    def test_without_local_progress_it_is_the_fresh_global_value(self):
        glob, snap = [torch.randn(4, 4)], [torch.randn(4, 4)]
        out = compensated_fragment(glob, snap, [snap[0].clone()], dc_lambda=1.0)
        assert torch.equal(out[0], glob[0])

    def test_replays_local_progress_minus_a_correction_of_lambda_times_its_norm(self):
        torch.manual_seed(2)
        glob, snap = [torch.randn(6), torch.randn(3, 2)], [torch.randn(6), torch.randn(3, 2)]
        local = [s + 0.1 * torch.randn_like(s) for s in snap]
        out = compensated_fragment(glob, snap, local, dc_lambda=0.5)
        for g, s, loc, o in zip(glob, snap, local, out):
            progress = loc - s
            correction = (g + progress) - o
            # the correction points along progress² ⊙ (global − snapshot), per tensor
            direction = progress * progress * (g - s)
            torch.testing.assert_close(correction.norm(), 0.5 * progress.norm())
            cos = torch.nn.functional.cosine_similarity(correction.flatten(),
                                                        direction.flatten(), dim=0)
            assert cos == pytest.approx(1.0, abs=1e-5)

    def test_lambda_0_is_replay_only(self):
        glob, snap = [torch.ones(3)], [torch.zeros(3)]
        out = compensated_fragment(glob, snap, [torch.full((3,), 0.25)], dc_lambda=0.0)
        torch.testing.assert_close(out[0], torch.full((3,), 1.25))


class TestQuantisation:
    @pytest.mark.parametrize("bits", [4, 8])
    def test_round_trip_error_is_at_most_half_a_step(self, bits):
        torch.manual_seed(3)
        t = torch.randn(1000)
        step = t.abs().max() / (2 ** (bits - 1) - 1)
        q = quantize_dequantize(t, bits)
        assert (q - t).abs().max() <= step / 2 + 1e-6
        assert q.unique().numel() <= 2 ** bits - 1

    def test_32_bits_is_lossless(self):
        t = torch.randn(10)
        assert torch.equal(quantize_dequantize(t, 32), t)

    def test_payload_counts_packed_values_and_one_scale_per_tensor(self):
        assert payload_bytes([1000, 7], 32) == 4 * 1007
        assert payload_bytes([1000, 7], 8) == 1000 + 4 + 7 + 4
        assert payload_bytes([1000, 7], 4) == 500 + 4 + 4 + 4
