"""The emulated runtime's calls: lazy, in order, and replies not held after use."""
import gc
import weakref

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


def test_results_hand_out_replies_in_order_and_keep_none_of_them():
    objects = [Echo(i) for i in range(5)]
    runtime = EmulatedRuntime(objects)
    futures = [w.call("fit") for w in runtime.workers]
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
