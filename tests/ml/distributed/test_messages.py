"""The wire format (JSON headers and tensors, never pickles) and the link shaping maths."""
import dataclasses
import math

import pytest
import torch

from ml.distributed import LinkShape, ProtocolError
from ml.distributed import messages
from ml.distributed.shaping import Shaper
from ml.fl import TrainResult


def round_trip(value):
    tensors = []
    header = messages.decode_header(messages.encode_header({"op": "x",
                                                            "v": messages.pack(value, tensors)}))
    flats = messages.flatten(tensors, torch.device("cpu"))
    buffers, plan = messages.buffers_for(messages.tensor_specs(tensors), torch.device("cpu"))
    for buf, flat in zip(buffers, flats):
        buf.copy_(flat)
    return messages.unpack(header["v"], messages.split(plan))


def test_tensors_scalars_and_registered_dataclasses_cross_exactly():
    messages.wire_type(TrainResult)
    weights = [torch.randn(3, 4), torch.arange(5), torch.randn(2, dtype=torch.float64),
               torch.zeros(0, 7)]
    result = TrainResult(weights, 10, 12, 3, 0.1 + 0.2)
    back = round_trip({"r": result, "n": [1, None, True, "s"]})
    assert back["n"] == [1, None, True, "s"]
    assert back["r"].loss == 0.1 + 0.2 and back["r"].num_samples == 10
    for a, b in zip(back["r"].weights, weights):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_one_flat_buffer_per_dtype_and_no_empty_ones():
    flats = messages.flatten([torch.ones(2), torch.ones(3, dtype=torch.int64), torch.ones(4),
                              torch.ones(0, dtype=torch.int8)], torch.device("cpu"))
    assert [(f.dtype, f.numel()) for f in flats] == [(torch.float32, 6), (torch.int64, 3)]


@dataclasses.dataclass
class Unregistered:
    x: int


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", Unregistered(1), object(), float("nan"),
                                   {"$tensor": 0}, {3: "int key"}])
def test_a_value_that_is_not_json_or_a_tensor_is_refused_on_sending(value):
    with pytest.raises(ProtocolError):
        messages.pack(value, [])


def test_a_header_with_a_non_json_type_is_refused():
    with pytest.raises(ProtocolError):
        messages.encode_header({"op": "call", "args": {1, 2}})
    with pytest.raises(ProtocolError):
        messages.encode_header({"op": "call", "loss": float("inf")})


@pytest.mark.parametrize("raw", [b"\x80\x03}q\x00.", b"[1, 2]", b'{"op": 3}', b'{"op": NaN}',
                                 b"not json"])
def test_a_received_header_must_be_a_json_object_with_an_op(raw):
    with pytest.raises(ProtocolError):
        messages.decode_header(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


def test_a_receiver_builds_only_known_types_and_dtypes():
    with pytest.raises(ProtocolError):
        messages.unpack({"$type": "os.system", "fields": {}}, [])
    with pytest.raises(ProtocolError):
        messages.unpack({"$tensor": 3}, [])
    with pytest.raises(ProtocolError):
        messages.buffers_for([{"dtype": "object", "shape": [1]}], torch.device("cpu"))
    with pytest.raises(ProtocolError):
        messages.buffers_for([{"dtype": "float32", "shape": [-1]}], torch.device("cpu"))


def test_the_link_shape_of_a_profile_uses_its_uplink_and_rtt():
    shape = LinkShape.of_profile({"profile": "jetson-nx", "name": "a", "uplink_mbps": 8.0})
    assert shape.uplink_bytes_per_s == 1e6 and shape.rtt_s == 0.015
    assert LinkShape.of_profile({"profile": "jetson-tx2"}).uplink_bytes_per_s == 20e6 / 8
    with pytest.raises(ValueError):
        LinkShape(0.0, 0.01)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_the_sender_is_busy_for_size_over_rate_and_messages_arrive_after_half_the_rtt():
    clock = FakeClock()
    shaper = Shaper(LinkShape(uplink_bytes_per_s=1000.0, rtt_s=0.2), clock=clock)
    assert shaper.schedule(500) == (100.5, 100.6)
    # a second message queues behind the first on the uplink ...
    assert shaper.schedule(1000) == (101.5, 101.6)
    # ... and one sent after the uplink went idle starts when sent
    clock.t = 200.0
    busy, release = shaper.schedule(0)
    assert busy == 200.0 and math.isclose(release, 200.1)
