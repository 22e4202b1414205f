"""Prompt chunking: the chunk size that minimises a device's predicted time to first token.

A prompt of ``P`` tokens is cut into chunks of ``s`` tokens (the last one shorter). Chunk ``k``
goes device input submodel -> uplink -> cloud middle submodel -> downlink -> device output
submodel; the links and the cloud are FIFO resources, so consecutive chunks overlap (a
pipeline), and the device is one resource for its input and output passes. The prediction
replays the device's own schedule (:func:`.protocols.hat`): input pass and upload of each
chunk, the output pass of every reply that has arrived by then, the draft model's prefill
over its window once everything is uploaded, then the remaining replies (arXiv 2503.18989:
TTFT ≈ T_dev(s) + Σ_k max(T_up, T_cloud) + T_down + T_out, here without the approximation).

Ours [I] (the paper: "chosen dynamically per device", the rule is inferred):

- the device's times come from its compute rate and memory bandwidth (roofline of the served
  model's layers), the links' from its bandwidths and RTT;
- the cloud's load is the number of devices it is serving when the request starts, ``load``: a
  chunk's cloud time is that of a batch of ``load`` such chunks (every device shares each batch);
- candidates are powers of two from 8 up to the prompt length, and the prompt length itself
  (no chunking); the largest candidate within ``tolerance`` (1%) of the best prediction wins:
  fewer, larger chunks mean fewer messages and cloud requests, whose fixed costs the clock
  does not model, so a smaller chunk must earn its place.
"""
from __future__ import annotations

from ml.algorithms.device_cloud_inference.cost import Op, ServedModels, batch_seconds, pass_seconds
from ml.testbed import EmulatedDevice, Testbed


def chunk_bounds(prompt_len: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each chunk of ``size`` tokens."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [(s, min(s + size, prompt_len)) for s in range(0, prompt_len, size)]


def predicted_ttft(prompt_len: int, size: int, device: EmulatedDevice, testbed: Testbed,
                   served: ServedModels, load: int = 1, draft_window: int = 0,
                   cloud_share: float = 1.0) -> float:
    """Predicted seconds from the request to the first token with chunks of ``size``
    (``draft_window``: prompt positions the draft model prefills, 0 for none; ``cloud_share``:
    the fraction of the cloud this service gets, as the engine charges it)."""
    cloud = testbed.require_server()
    up_bps = testbed.bandwidth_bps(device, cloud)
    down_bps = testbed.bandwidth_bps(cloud, device)
    latency = testbed.latency_s(device, cloud)
    bounds = chunk_bounds(prompt_len, size)

    def dev(op: Op) -> float:
        return pass_seconds(device, served.charge(op))
    arrivals: list[float] = []
    t = up = cl = down = 0.0
    consumed = 0

    def consume(wait_all: bool) -> float:
        """The device's clock after the output passes of the replies arrived by now (all
        replies, waiting for them, with ``wait_all``)."""
        nonlocal consumed
        clock = t
        while consumed < len(arrivals) and (wait_all or arrivals[consumed] <= clock):
            start, end = bounds[consumed]
            last = consumed == len(bounds) - 1
            clock = max(clock, arrivals[consumed]) + dev(Op("output", end - start, start,
                                                            1 if last else 0))
            consumed += 1
        return clock
    for start, end in bounds:
        n = end - start
        nbytes = served.llm.hidden_bytes(n)
        t += dev(Op("input", n, start))
        up = max(up, t) + nbytes * 8 / up_bps
        middle = served.charge(Op("middle", n, start))
        cl = max(cl, up + latency) + batch_seconds(cloud, [middle] * max(1, load),
                                                         share=cloud_share)
        down = max(down, cl) + nbytes * 8 / down_bps
        arrivals.append(down + latency)
        t = consume(False)
    if draft_window:
        t += dev(Op("adapter", draft_window, 0)) + dev(Op("output", draft_window, 0, 1))
    return consume(True)


def candidate_sizes(prompt_len: int) -> list[int]:
    """Powers of two from 8 below ``prompt_len``, then ``prompt_len`` (one chunk)."""
    sizes, s = [], 8
    while s < prompt_len:
        sizes.append(s)
        s *= 2
    return sizes + [prompt_len]


def choose_chunk_size(prompt_len: int, device: EmulatedDevice, testbed: Testbed,
                      served: ServedModels, load: int = 1, draft_window: int = 0,
                      tolerance: float = 0.01, cloud_share: float = 1.0) -> tuple[int, float]:
    """``(size, predicted TTFT in seconds)``: the largest candidate size predicted within
    ``tolerance`` of the lowest predicted TTFT."""
    predictions = [(size, predicted_ttft(prompt_len, size, device, testbed, served, load,
                                         draft_window, cloud_share))
                   for size in candidate_sizes(prompt_len)]
    best = min(t for _, t in predictions)
    return max((size, t) for size, t in predictions if t <= best * (1 + tolerance))
