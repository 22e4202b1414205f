"""The emulated runtime's calls: lazy, in order, and replies not held after use."""
import gc
import weakref

import pytest

from ml.distributed.runtime import EmulatedRuntime, results


class Reply:
    """A stand-in for a model a worker returns (weakref-able)."""

    def __init__(self, index: int):
        self.index = index


class Echo:
    def __init__(self, index: int):
        self.index = index
        self.calls = 0

    def fit(self) -> Reply:
        self.calls += 1
        return Reply(self.index)


@pytest.mark.parametrize("threads", [1, 2])
def test_results_hand_out_replies_in_order_and_keep_none_of_them(threads):
    objects = [Echo(i) for i in range(5)]
    runtime = EmulatedRuntime(objects, threads=threads)
    futures = [w.call("fit") for w in runtime.workers]
    if threads == 1:
        assert sum(o.calls for o in objects) == 0  # nothing runs before it is needed
    seen, refs = [], []
    for reply in results(futures):
        seen.append(reply.index)
        refs.append(weakref.ref(reply))
        del reply
        gc.collect()
        # Once let go of, no reply is kept alive by the runtime or the futures.
        assert all(r() is None for r in refs)
    assert seen == [0, 1, 2, 3, 4]
    assert futures == []
    assert [o.calls for o in objects] == [1] * 5
    runtime.close()


class Counted:
    """Workers that count replies made, and remember the order they ran in."""

    made = 0
    order: list = []

    def __init__(self, index: int):
        self.index = index

    def fit(self, round_: int) -> Reply:
        Counted.made += 1
        Counted.order.append((round_, self.index))
        return Reply(self.index)


def test_client_threads_run_calls_in_order_and_compute_few_replies_ahead():
    Counted.made, Counted.order = 0, []
    runtime = EmulatedRuntime([Counted(i) for i in range(50)], threads=2)
    try:
        for round_ in range(2):
            futures = [w.call("fit", round_) for w in runtime.workers]
            taken = []
            for reply in results(futures):
                taken.append(reply.index)
                # at most 2 x threads replies wait for the coordinator, plus one in hand
                assert Counted.made - len(taken) - 50 * round_ <= 4
            assert taken == list(range(50))
            runtime.flush()
    finally:
        runtime.close()
    assert sorted(Counted.order) == [(r, i) for r in range(2) for i in range(50)]
    # every call of round 0 ran before any of round 1 (the coordinator waited for them)
    assert [r for r, _ in Counted.order] == [0] * 50 + [1] * 50


def test_client_threads_run_one_workers_calls_one_after_the_other():
    Counted.made, Counted.order = 0, []
    runtime = EmulatedRuntime([Counted(0), Counted(1)], threads=3)
    try:
        futures = [runtime.workers[0].call("fit", k) for k in range(6)]
        assert futures[-1].result().index == 0
        assert [k for k, _ in Counted.order] == list(range(6))
    finally:
        runtime.close()
