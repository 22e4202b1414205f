"""FedAvg in the catalogue (its roles: roles.py)."""
from __future__ import annotations

from ml.algorithms.federated_learning.config import FedAvgConfig
from ml.algorithms.federated_learning.roles import PROGRAM
from ml.distributed.run import run_emulated
from ml.registry import Method, register
from ml.reporting import Reporter


def run(config: FedAvgConfig, reporter: Reporter) -> dict:
    """Train with FedAvg on the emulated testbed; report per-round metrics; return the summary."""
    return run_emulated(PROGRAM, config, reporter)


METHOD = register(Method(
    name="fedavg",
    paper="McMahan et al., Communication-Efficient Learning of Deep Networks from Decentralized "
          "Data, AISTATS 2017 (arXiv 1602.05629)",
    summary="Federated averaging: sampled workers train the whole model locally for a few "
            "epochs; the server averages their weights by data size.",
    config=FedAvgConfig,
    run=run,
    baselines=(),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/model",
             "round_time_s", "sim_time_s", "waiting_time_s"),
    family="federated-learning",
    program=PROGRAM,
))
