"""Building blocks of federated and split learning, shared by FedAvg, SplitFed and the
split-FL methods: config, set-up, workers, weight averaging, sampling, evaluation, metrics."""
from ml.fl.batches import BatchStream
from ml.fl.config import FederatedConfig
from ml.fl.evaluate import evaluate
from ml.fl.federation import Federation, build_federation, work_per_sample
from ml.fl.reporting import RoundLog
from ml.fl.sampling import participants_count, sample_clients
from ml.fl.weights import WeightedAverage, Weights, get_weights, set_weights, state_tensors
from ml.fl.workers import (LocalTrainer, SGDSettings, TrainData, TrainerPool, TrainResult, Worker,
                           sgd_step)

__all__ = [
    "BatchStream", "FederatedConfig", "Federation", "LocalTrainer", "RoundLog", "SGDSettings",
    "TrainData", "TrainerPool", "TrainResult", "WeightedAverage", "Weights",
    "Worker", "build_federation", "evaluate", "get_weights", "participants_count",
    "sample_clients", "set_weights", "sgd_step", "state_tensors", "work_per_sample",
]
