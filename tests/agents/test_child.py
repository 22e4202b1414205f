"""A job's child process is forked from the agent's forkserver with what every job needs
already imported: torch, the catalogue and the readers of the packaged data sets (importing
scikit-learn alone cost every job ~1.3 s before its first point: issue #20's dispatch
latency)."""
import sys

from agents.child import role_context, start_forkserver

PRELOADED = ["ml.algorithms.federated_learning", "mlxtend.data", "sklearn.datasets", "torch"]


def _report_imported(conn) -> None:
    conn.send([name for name in PRELOADED if name in sys.modules])
    conn.close()


def test_a_jobs_child_starts_with_torch_the_catalogue_and_the_data_readers_imported():
    start_forkserver()
    context = role_context()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_report_imported, args=(sender,))
    child.start()
    imported = receiver.recv()
    child.join(30)
    assert child.exitcode == 0
    assert imported == PRELOADED
