"""ml.distributed.collectives in one process (the distributed path is exercised by the
cross-region runs over local ranks, tests/ml/algorithms/cross_region/test_local_runs.py)."""
import pytest
import torch

from ml.algorithms.cross_region.quantization import QuantizedCodec, quantize_dequantize
from ml.distributed.collectives import LocalCollectives, sum_in_order


def test_all_reduce_adds_in_member_order_from_zeros():
    group = LocalCollectives([2, 0, 1])
    values = {m: [torch.tensor([0.1 * (m + 1), 1e16 if m == 0 else 1.0])] for m in range(3)}
    pending = group.all_reduce("t", values, mean=True)
    expected = torch.zeros(2)
    for m in (0, 1, 2):
        expected.add_(values[m][0])
    assert torch.equal(pending.wait()[0], expected / 3)
    assert pending.done


def test_gather_and_broadcast_in_one_process():
    group = LocalCollectives(range(2))
    values = {0: [torch.ones(3)], 1: [torch.zeros(3)]}
    assert {m: v[0].tolist() for m, v in group.gather("g", values).wait().items()} == \
        {0: [1.0] * 3, 1: [0.0] * 3}
    assert group.broadcast("b", [torch.ones(1)], root=0).wait()[0].item() == 1.0
    with pytest.raises(ValueError, match="hosts"):
        group.all_reduce("x", {0: [torch.ones(1)]})


@pytest.mark.parametrize("bits", [4, 8])
def test_a_codec_sums_what_the_wire_carries(bits):
    codec = QuantizedCodec(bits)
    t = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    wire = codec.encode(t)
    assert wire[0].dtype == torch.uint8 and wire[0].numel() == -(-t.numel() * bits // 8)
    assert torch.equal(codec.decode(wire, t), quantize_dequantize(t, bits))
    total = LocalCollectives([0, 1]).all_reduce("q", {0: [t], 1: [-2 * t]}, codec=codec).wait()
    assert torch.equal(total[0], sum_in_order({0: [quantize_dequantize(t, bits)],
                                               1: [quantize_dequantize(-2 * t, bits)]},
                                              mean=False)[0])
