"""The split-learning methods as role programs (:class:`ml.distributed.runtime.RoleProgram`).

Every rank builds the same :class:`~.context.SplitContext`; a worker rank hosts its virtual
workers (each with its own bottom model and its shard's batches); the coordinator is the server
(SplitFed's fed and main server, AdaSFL's and MergeSFL's server, ParallelSFL's PS and the
clusters' top models). Features and labels travel up, gradient slices down, bottoms both ways.
"""
from __future__ import annotations

import copy

from ml.algorithms.split_learning import parallel, regulated, splitfed
from ml.algorithms.split_learning.config import AdaSFLConfig, MergeSFLConfig
from ml.algorithms.split_learning.context import SplitContext, split_context
from ml.algorithms.split_learning.sampling import SampleStream
from ml.algorithms.split_learning.workers import SampledSplitWorker, SplitFedWorker
from ml.distributed.links import WorkerLinks
from ml.distributed.runtime import RoleProgram, Runtime
from ml.fl import SGDSettings
from ml.method_run import generator
from ml.reporting import Reporter

#: What the coordinator may call on a worker: weights both ways, a batch forward, a backward.
EXPOSED = frozenset({"set_weights", "get_weights", "backward"})


def _sgd(context: SplitContext) -> SGDSettings:
    config = context.config
    return SGDSettings(config.lr, config.momentum, config.weight_decay)


def splitfed_worker(context: SplitContext, index: int) -> SplitFedWorker:
    """A SplitFed worker: fixed-size batches of its shard, epoch after epoch."""
    fed = context.fed
    return SplitFedWorker(index, fed.testbed.workers[index], fed.train, fed.stream(index),
                          copy.deepcopy(context.bottom), _sgd(context))


def sampled_worker(context: SplitContext, index: int) -> SampledSplitWorker:
    """An AdaSFL / MergeSFL / ParallelSFL worker: batches of the planned size."""
    fed = context.fed
    samples = SampleStream(fed.shards[index], generator(context.config.seed, "shuffle", index))
    return SampledSplitWorker(index, fed.testbed.workers[index], fed.train, samples,
                              copy.deepcopy(context.bottom), _sgd(context))


def cluster_worker(context: SplitContext, index: int) -> parallel.ClusterWorker:
    """A ParallelSFL worker (member, and top worker of its cluster when chosen)."""
    fed = context.fed
    samples = SampleStream(fed.shards[index], generator(context.config.seed, "shuffle", index))
    return parallel.ClusterWorker(index, fed.testbed.workers[index], fed.train, samples,
                                  copy.deepcopy(context.bottom), context.top, _sgd(context),
                                  context.mailbox)


def connect_mailbox(context: SplitContext, links: WorkerLinks) -> None:
    """ParallelSFL's members and top workers message each other through the mailbox."""
    context.mailbox = links.mailbox


def adasfl_coordinate(config: AdaSFLConfig, context: SplitContext, runtime: Runtime,
                      reporter: Reporter) -> dict:
    return regulated.train(config, context, runtime, reporter, regulated.adasfl_policy(config))


def mergesfl_coordinate(config: MergeSFLConfig, context: SplitContext, runtime: Runtime,
                        reporter: Reporter) -> dict:
    return regulated.train(config, context, runtime, reporter, regulated.mergesfl_policy(config))


SPLITFED = RoleProgram(setup=split_context, worker=splitfed_worker,
                       coordinate=splitfed.coordinate, exposed=EXPOSED | {"forward_next"})
ADASFL = RoleProgram(setup=split_context, worker=sampled_worker, coordinate=adasfl_coordinate,
                     exposed=EXPOSED | {"forward_take"})
MERGESFL = RoleProgram(setup=split_context, worker=sampled_worker,
                       coordinate=mergesfl_coordinate, exposed=EXPOSED | {"forward_take"})
PARALLELSFL = RoleProgram(setup=split_context, worker=cluster_worker,
                          coordinate=parallel.coordinate, exposed=parallel.EXPOSED,
                          connect=connect_mailbox)

