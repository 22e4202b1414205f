"""What each metric name means: one catalogue of labels, units and descriptions.

Methods report points under the standard names (DESIGN: ``accuracy``, ``traffic_bytes``, ...)
and a few of their own; per-entity series are ``<name>/<entity>`` (``waiting_time_s/worker-03``,
``traffic_bytes/features``). :func:`describe` resolves any reported name: an exact entry first
(``traffic_bytes/model`` is one), else the entry of its prefix with the entity appended to the
label. The dashboard titles and formats axes with these; the catalogue API serves them.

Units are a closed vocabulary (:data:`UNITS`) so the page formats each one the same way:
``fraction`` is a value in [0, 1] shown as a percent, ``bytes`` in B/kB/MB, ``s`` and ``ms`` as
durations, ``count`` as an integer, ``""`` a dimensionless number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

#: Units a metric may have (see the module docstring).
UNITS = ("fraction", "bytes", "s", "ms", "count", "flops", "bytes/token", "tokens", "")


@dataclass(frozen=True)
class MetricInfo:
    """How to show one metric: ``label`` (a title), ``unit`` (one of :data:`UNITS`),
    ``description`` (a sentence), and whether larger is better (None: neither)."""

    label: str
    unit: str
    description: str
    higher_is_better: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _m(label: str, unit: str, description: str, higher: bool | None = None) -> MetricInfo:
    assert unit in UNITS, unit
    return MetricInfo(label, unit, description, higher)


#: Exact names, and per-entity prefixes (the part before "/").
CATALOGUE: dict[str, MetricInfo] = {
    # Standard names (DESIGN "Standard metric names").
    "accuracy": _m("Accuracy", "fraction", "Top-1 accuracy on the test set.", True),
    "loss": _m("Test loss", "", "Cross-entropy loss on the test set.", False),
    "train_loss": _m("Training loss", "", "Mean training loss of the round's batches.", False),
    "eval_loss": _m("Evaluation loss", "", "Loss on the held-out evaluation set.", False),
    "perplexity": _m("Perplexity", "", "exp(mean token cross-entropy) on the evaluation set.",
                     False),
    "traffic_bytes": _m("Traffic", "bytes",
                        "Bytes sent over the testbed's links so far (cumulative).", False),
    "round_time_s": _m("Round latency", "s", "Emulated duration of the round.", False),
    "sim_time_s": _m("Emulated time", "s", "The testbed clock: emulated seconds since the start."),
    "wall_time_s": _m("Wall time", "s", "Real seconds since the run started."),
    "ttft_ms": _m("Time to first token", "ms", "Latency until the first generated token.", False),
    "tbt_ms": _m("Time between tokens", "ms", "Mean latency between generated tokens.", False),
    "memory_bytes": _m("Memory", "bytes", "Peak memory used on the device.", False),
    # Federated and split learning.
    "traffic_bytes/model": _m("Traffic: model weights", "bytes",
                              "Cumulative bytes of model weights sent (up and down).", False),
    "traffic_bytes/features": _m("Traffic: activations", "bytes",
                                 "Cumulative bytes of smashed data (cut-layer activations).",
                                 False),
    "traffic_bytes/gradients": _m("Traffic: gradients", "bytes",
                                  "Cumulative bytes of cut-layer gradients.", False),
    "traffic_bytes/": _m("Traffic", "bytes", "Cumulative bytes of this kind of message.", False),
    "waiting_time_s": _m("Waiting time", "s",
                         "Mean cumulative time workers idled waiting for the slowest.", False),
    "waiting_time_s/": _m("Waiting time", "s",
                          "Cumulative time this worker idled waiting for the slowest.", False),
    "batch_label_kl": _m("Batch label divergence", "",
                         "Mean KL divergence between each merged batch's label distribution "
                         "and the global one (0: balanced).", False),
    "cluster_label_kl": _m("Cluster label divergence", "",
                           "Mean KL divergence between each cluster's label distribution and "
                           "the global one (0: balanced).", False),
    "participants": _m("Participants", "count", "Workers that took part in the round."),
    "top_lr": _m("Top-model learning rate", "",
                 "Learning rate of the server-side (top) model this round."),
    # Parameter-efficient fine-tuning (FedSpine and baselines).
    "sparsity": _m("Sparsity", "fraction", "Mean fraction of pruned weights over clients."),
    "sparsity/": _m("Sparsity", "fraction", "Fraction of this client's weights pruned."),
    "rank/": _m("LoRA rank", "count", "LoRA rank assigned to this client."),
    "ratio/": _m("Pruning ratio", "fraction", "Pruning ratio assigned to this client."),
    "completion_time_s/": _m("Completion time", "s",
                             "Emulated time this client took for the round.", False),
    "inference_latency_ms": _m("Inference latency", "ms",
                               "Emulated latency of one inference on the device.", False),
    "inference_latency_ms/": _m("Inference latency", "ms",
                                "Emulated latency of one inference on this client.", False),
    "inference_wall_ms": _m("Inference latency (measured)", "ms",
                            "Measured wall-clock latency of one inference on the host.", False),
    "memory_bytes/": _m("Memory", "bytes", "Peak memory used on this client.", False),
    "params": _m("Parameters", "count", "Number of model parameters."),
    "flops": _m("FLOPs", "flops", "Floating-point operations of one forward pass.", False),
    # Cross-region training (DiLoCo family).
    "staleness/": _m("Staleness", "count",
                     "Outer steps by which this fragment's update lags the global model.", False),
    # Device-cloud inference (HAT family).
    "acceptance_rate": _m("Acceptance rate", "fraction",
                          "Fraction of drafted tokens the cloud model accepted.", True),
    "tokens_per_round": _m("Tokens per round", "tokens",
                           "Tokens committed per device-cloud round.", True),
    "uplink_bytes_per_token": _m("Uplink per token", "bytes/token",
                                 "Bytes sent device to cloud per generated token.", False),
    "downlink_bytes_per_token": _m("Downlink per token", "bytes/token",
                                   "Bytes sent cloud to device per generated token.", False),
    "prefill_uplink_bytes": _m("Prefill uplink", "bytes",
                               "Bytes sent device to cloud for the prompt's prefill.", False),
    "latency_ms": _m("Latency", "ms", "End-to-end latency of one request.", False),
    "wall_ttft_ms": _m("Time to first token (measured)", "ms",
                       "Wall-clock time to first token of a distributed run.", False),
    "wall_tbt_ms": _m("Time between tokens (measured)", "ms",
                      "Wall-clock time between tokens of a distributed run.", False),
    "setup_wall_s": _m("Set-up time (measured)", "s",
                       "Wall-clock seconds until every rank of a distributed run had built "
                       "its roles.", False),
    "measured_traffic_bytes": _m("Traffic (measured)", "bytes",
                                 "Payload bytes the ranks of a distributed run sent.", False),
    "ttft_ms/": _m("Time to first token", "ms", "Time to first token on this device.", False),
    "tbt_ms/": _m("Time between tokens", "ms", "Time between tokens on this device.", False),
    # LLM compression (COMP and baselines).
    "achieved_ratio": _m("Achieved compression", "fraction",
                         "Fraction of parameters removed.", True),
    "prune_time_s": _m("Pruning time", "s", "Time the pruning took.", False),
    "prune_peak_memory_bytes": _m("Pruning peak memory", "bytes",
                                  "Peak memory while pruning.", False),
    # Imbalanced NAS.
    "few_shot_accuracy": _m("Few-shot accuracy", "fraction",
                            "Accuracy on the rarest classes (few-shot split).", True),
    "medium_shot_accuracy": _m("Medium-shot accuracy", "fraction",
                               "Accuracy on the medium-frequency classes.", True),
    "many_shot_accuracy": _m("Many-shot accuracy", "fraction",
                             "Accuracy on the most frequent classes.", True),
    "supernet_accuracy": _m("Supernet accuracy", "fraction",
                            "Validation accuracy of the weight-sharing supernet.", True),
    "val_accuracy": _m("Validation accuracy", "fraction", "Accuracy on the validation set.",
                       True),
    "search_cost_s": _m("Search cost", "s", "Emulated time the architecture search took.",
                        False),
    "search_flops": _m("Search FLOPs", "flops", "Floating-point operations of the search.",
                       False),
}

#: Every method's main metric when it reports it: the first of these (lists show it).
MAIN_METRICS = ("accuracy", "perplexity", "acceptance_rate", "ttft_ms", "loss")


def entry_key(name: str) -> str | None:
    """The catalogue key describing ``name`` (exact, else ``prefix/``), or None."""
    if name in CATALOGUE:
        return name
    if "/" in name:
        prefix = name.split("/", 1)[0] + "/"
        if prefix in CATALOGUE:
            return prefix
    return None


def describe(name: str) -> MetricInfo:
    """The label, unit and description of a reported metric name. A per-entity series gets its
    entity in the label ("Waiting time · worker-03"); an unknown name is shown as it is."""
    key = entry_key(name)
    if key is None:
        return MetricInfo(name, "", "")
    info = CATALOGUE[key]
    if key.endswith("/"):
        return MetricInfo(f"{info.label} · {name.split('/', 1)[1]}", info.unit,
                          info.description, info.higher_is_better)
    return info


def format_value(value: float, unit: str) -> str:
    """A value for a log line or a table: "81.2%", "12.3 MB", "322 ms", "0.5312"."""
    if unit == "fraction":
        return f"{value * 100:.3g}%"
    if unit in ("bytes", "bytes/token"):
        suffix = "/token" if unit == "bytes/token" else ""
        for factor, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= factor:
                return f"{value / factor:.3g} {name}{suffix}"
        return f"{value:.3g} B{suffix}"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "ms":
        return f"{value:.3g} ms"
    if unit in ("count", "tokens") and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def summary_line(values: dict[str, float]) -> str:
    """``name value`` pairs in the catalogue's words: "accuracy 81.2% · test loss 0.53"."""
    return " · ".join(f"{describe(name).label.lower()} {format_value(value, describe(name).unit)}"
                      for name, value in values.items())


def as_json() -> dict[str, dict]:
    """The whole catalogue, keyed as :data:`CATALOGUE` (prefix keys end with "/")."""
    return {key: info.as_dict() for key, info in CATALOGUE.items()}
