"""Flower's side of ``bench/vs_flower.py``: FedAvg in Flower's simulation (Ray), run in the Flower
virtual environment that vs_flower.py creates. Not for direct use.

Reads the data, the shards and the initial weights vs_flower.py wrote (the same ones Estuary's
run trains on), builds the same model (``ml.models.build_model("cnn-small", ...)``, Estuary's own definition), trains
every client every round (one local epoch of SGD, lr, momentum and batch size as given, a fresh
optimiser each round as Estuary's workers), averages with Flower's FedAvg weighted by shard size,
and evaluates the global model on the test set after the last round (server side, as Estuary).

    python bench/flower_fedavg.py DATA.npz CLIENTS ROUNDS RESULT.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flwr.client import NumPyClient  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters  # noqa: E402
from flwr.server import ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.serverapp import ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from ml.models import build_model  # noqa: E402

LR, MOMENTUM, BATCH = 0.05, 0.9, 32


def main() -> None:
    data_path, clients, rounds, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    data = np.load(data_path)
    train_x, train_y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    test_x, test_y = torch.from_numpy(data["test_x"]), torch.from_numpy(data["test_y"])
    shards = [torch.from_numpy(data[f"shard_{clients}_{i}"]) for i in range(clients)]
    torch.set_num_threads(1)
    model = build_model("cnn-small", 10, tuple(train_x.shape[1:]))
    keys = list(model.state_dict())
    model.load_state_dict({key: torch.from_numpy(data[f"init_{i}"]) for i, key in enumerate(keys)})

    def weights(net) -> list[np.ndarray]:
        return [t.detach().cpu().numpy().copy() for t in net.state_dict().values()]

    def load(net, arrays) -> None:
        net.load_state_dict({k: torch.from_numpy(np.asarray(a)) for k, a in zip(keys, arrays)})

    class Client(NumPyClient):
        def __init__(self, index: int):
            self.index = index

        def fit(self, parameters, config):
            torch.set_num_threads(1)
            net = build_model("cnn-small", 10, tuple(train_x.shape[1:]))
            load(net, parameters)
            net.train()
            optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
            shard = shards[self.index]
            generator = torch.Generator().manual_seed(1000 * int(config["round"]) + self.index)
            for batch in shard[torch.randperm(len(shard), generator=generator)].split(BATCH):
                loss = F.cross_entropy(net(train_x[batch]), train_y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return weights(net), len(shard), {}

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    def evaluate(server_round: int, parameters, config):
        if server_round != rounds:
            return None
        net = build_model("cnn-small", 10, tuple(train_x.shape[1:]))
        load(net, parameters)
        net.eval()
        with torch.no_grad():
            logits = net(test_x)
        accuracy = (logits.argmax(1) == test_y).float().mean().item()
        Path(out).write_text(json.dumps({"accuracy": accuracy}))  # the ServerApp may be a thread
        return F.cross_entropy(logits, test_y).item(), {"accuracy": accuracy}

    def server_fn(context: Context):
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                          min_evaluate_clients=0, min_available_clients=clients,
                          evaluate_fn=evaluate, on_fit_config_fn=lambda r: {"round": r},
                          initial_parameters=ndarrays_to_parameters(weights(model)))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=client_fn), num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"include_dashboard": False,
                                                 "logging_level": "ERROR"}})


if __name__ == "__main__":
    main()
