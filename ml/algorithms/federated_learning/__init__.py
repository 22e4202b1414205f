"""Federated learning: FedAvg (arXiv 1602.05629), the baseline of the split-learning family.

Importing this package registers ``fedavg`` (methods.py); its roles are in roles.py.
"""
from ml.algorithms.federated_learning import methods  # noqa: F401  (registers fedavg)
