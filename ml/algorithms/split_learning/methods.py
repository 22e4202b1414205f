"""The split-learning family's catalogue entries: one registration per method, each the
emulated run of its role program (:mod:`.roles`)."""
from __future__ import annotations

from functools import partial

from ml.algorithms.split_learning import roles
from ml.algorithms.split_learning.config import (AdaSFLConfig, MergeSFLConfig,
                                                 ParallelSFLConfig, SplitFedConfig)
from ml.distributed.run import run_emulated
from ml.registry import Method, register

register(Method(
    name="splitfed",
    paper="Thapa et al., SplitFed: When Federated Learning Meets Split Learning, AAAI 2022 "
          "(arXiv 2004.12088)",
    summary="SFL-V2: workers train the bottom of a split model, the server trains the top on "
            "their features one worker after another; bottoms are averaged every K iterations.",
    config=SplitFedConfig,
    run=partial(run_emulated, roles.SPLITFED),
    baselines=("fedavg",),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s"),
    family="split-learning",
    program=roles.SPLITFED,
))

register(Method(
    name="adasfl",
    paper="Liao et al., AdaSFL, IEEE/ACM Transactions on Networking 2023 (code ymliao98/AdaSFL)",
    summary="Split FL whose server regulates each worker's batch size so that heterogeneous "
            "workers finish every iteration together; bottoms averaged by batch size.",
    config=AdaSFLConfig,
    run=partial(run_emulated, roles.ADASFL),
    baselines=("splitfed", "fedavg"),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s", "batch_label_kl"),
    family="split-learning",
    program=roles.ADASFL,
))

register(Method(
    name="mergesfl",
    paper="Liao et al., MergeSFL: Split Federated Learning with Feature Merging and Batch Size "
          "Regulation, ICDE 2024 (arXiv 2311.13348)",
    summary="Split FL whose server merges the features of a genetically selected, label-balanced "
            "set of workers into one top-model step, with batch sizes regulated per worker.",
    config=MergeSFLConfig,
    run=partial(run_emulated, roles.MERGESFL),
    baselines=("adasfl", "splitfed", "fedavg"),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s", "batch_label_kl", "participants", "top_lr"),
    family="split-learning",
    program=roles.MERGESFL,
))

register(Method(
    name="parallelsfl",
    paper="Liao et al., ParallelSFL: A Novel Split Federated Learning Framework Tackling "
          "Heterogeneity Issues, MobiCom 2024 (arXiv 2410.01256)",
    summary="Split FL in parallel clusters: label-balanced clusters of similar-speed workers "
            "train with a top worker each, at per-cluster frequencies, and exchange full models "
            "with the parameter server.",
    config=ParallelSFLConfig,
    run=partial(run_emulated, roles.PARALLELSFL),
    baselines=("mergesfl", "adasfl", "splitfed", "fedavg"),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s", "cluster_label_kl"),
    family="split-learning",
    program=roles.PARALLELSFL,
))
