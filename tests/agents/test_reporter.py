"""HttpReporter against a real server that goes away and comes back: every point arrives once."""
import stat
import threading
import time

import pytest

from agents.client import ControlPlane
from agents.reporter import HttpReporter
from agents.resend import resend_spool
from agents.spool import Spool
from agents.tracker import RunningJob
from tests.fixtures.agents import wait_for
from tests.fixtures.servers import free_port, start_daphne

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def own_server(subprocess_env, tmp_path_factory):
    """A daphne of this module's own, which a test may stop and start again on the same port."""
    log_dir = tmp_path_factory.mktemp("own-daphne")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes = []

    def start():
        processes.append(start_daphne(f"daphne-{len(processes)}", port, subprocess_env, log_dir))

    def stop():
        processes[-1].stop()

    start()
    yield url, start, stop
    for process in processes:
        process.stop()


@pytest.fixture
def hosted_run(owner, device_factory, experiment_factory):
    """A running job on a device of ``owner``: (credential, job id, run id)."""
    enrolled = device_factory(owner, name="reporter-host", profile="a6000-server")
    experiment = experiment_factory(owner, host=enrolled.device, config={"rounds": 1})
    job = experiment.runs.get().job
    return enrolled.credential, str(job.id), str(job.run_id)


def points_of(run_id: str) -> list[tuple[str, int, float]]:
    from controlplane.metrics.models import MetricPoint

    return sorted(MetricPoint.objects.filter(run_id=run_id).values_list("name", "step", "value"))


def test_it_spools_while_the_server_is_down_and_delivers_each_point_once(
        own_server, hosted_run, tmp_path):
    url, start_server, stop_server = own_server
    credential, job_id, run_id = hosted_run
    client = ControlPlane(url, credential)
    client.start_job(job_id)
    spool = Spool(tmp_path / "spool")
    reporter = HttpReporter(client, run_id, RunningJob(job_id), spool,
                            flush_interval_s=0.1, give_up_after_s=1.0).start()

    for step in range(100):
        reporter.metric("loss", step, 1.0 / (step + 1), sim_time_s=step * 0.5)
    wait_for(lambda: reporter.delivered == 100, 30, "the first batch")

    stop_server()
    for step in range(100, 250):
        reporter.metric("loss", step, 1.0 / (step + 1), sim_time_s=step * 0.5)
    wait_for(lambda: len(spool.points(run_id)) == 150, 30, "the points to be spooled on disk")
    assert len(points_of(run_id)) == 100
    spooled = list((tmp_path / "spool").iterdir())
    assert spooled and {stat.S_IMODE(path.stat().st_mode) for path in spooled} == {0o600}

    start_server()
    wait_for(lambda: reporter.unsent == 0 and not spool.points(run_id), 60, "the spool to drain")
    assert reporter.close()

    expected = [("loss", step, 1.0 / (step + 1)) for step in range(250)]
    assert points_of(run_id) == expected


def test_it_does_not_duplicate_a_batch_sent_again(own_server, hosted_run, tmp_path):
    """A batch whose answer was lost is sent again: the server keeps one copy of each point."""
    url, _, _ = own_server
    credential, job_id, run_id = hosted_run
    client = ControlPlane(url, credential)
    client.start_job(job_id)
    batch = [{"name": "accuracy", "step": step, "value": step / 10, "sim_time_s": float(step),
              "wall_time_s": float(step)} for step in range(10)]
    assert client.post_metrics(run_id, batch)["accepted"] == 10

    # The agent died before it saw the answer; its spool still holds the batch (and more).
    spool = Spool(tmp_path / "spool")
    more = [{**point, "step": point["step"] + 10} for point in batch]
    spool.replace_points(run_id, batch + more)
    assert resend_spool(client, spool)

    assert points_of(run_id) == [("accuracy", step, step / 10 if step < 10 else (step - 10) / 10)
                                 for step in range(20)]
    assert spool.runs_with_points() == []


def test_it_reports_cancellation_from_the_metrics_answer(own_server, hosted_run, tmp_path):
    from controlplane.experiments.actions import cancel_experiment
    from controlplane.experiments.models import Job

    url, _, _ = own_server
    credential, job_id, run_id = hosted_run
    client = ControlPlane(url, credential)
    client.start_job(job_id)
    job = RunningJob(job_id)
    with HttpReporter(client, run_id, job, Spool(tmp_path / "spool"),
                      flush_interval_s=0.1) as reporter:
        reporter.metric("loss", 0, 1.0, sim_time_s=0.0)
        wait_for(lambda: reporter.delivered == 1, 30, "the first point")
        assert not reporter.should_stop()

        cancel_experiment(Job.objects.get(pk=job_id).run.experiment)
        reporter.metric("loss", 1, 0.5, sim_time_s=1.0)
        wait_for(reporter.should_stop, 30, "the metrics answer to say cancelled")


def log_of(run_id: str) -> list[tuple[int, str]]:
    from controlplane.metrics.models import RunLog

    return list(RunLog.objects.filter(run_id=run_id).order_by("seq").values_list("seq", "line"))


def test_it_numbers_log_lines_and_each_is_stored_once(own_server, hosted_run, tmp_path):
    url, start_server, stop_server = own_server
    credential, job_id, run_id = hosted_run
    client = ControlPlane(url, credential)
    client.start_job(job_id)
    spool = Spool(tmp_path / "spool")
    reporter = HttpReporter(client, run_id, RunningJob(job_id), spool,
                            flush_interval_s=0.1, give_up_after_s=1.0).start()
    reporter.log("round 0\nround 1")
    wait_for(lambda: log_of(run_id) == [(0, "round 0"), (1, "round 1")], 30, "the first lines")

    stop_server()
    reporter.log("round 2")
    reporter.log("round 3")
    wait_for(lambda: spool.lines(run_id) == [(2, "round 2"), (3, "round 3")], 30,
             "the lines to be spooled with their numbers")

    start_server()
    wait_for(lambda: not spool.lines(run_id), 60, "the spooled lines to be delivered")
    assert reporter.close()
    # A batch sent again (its answer was lost) stores nothing twice.
    client.post_logs(run_id, 1, ["round 1", "round 2"])
    assert log_of(run_id) == [(seq, f"round {seq}") for seq in range(4)]


def test_the_resender_delivers_spooled_lines_once(own_server, hosted_run, tmp_path):
    """Lines an agent spooled before it died are sent at its next start, numbers kept."""
    url, _, _ = own_server
    credential, job_id, run_id = hosted_run
    client = ControlPlane(url, credential)
    client.start_job(job_id)
    client.post_logs(run_id, 0, ["round 0", "round 1"])
    spool = Spool(tmp_path / "spool")
    spool.replace_lines(run_id, [(1, "round 1"), (2, "round 2"), (4, "round 4")])  # (3 refused)
    assert resend_spool(client, spool)

    assert log_of(run_id) == [(0, "round 0"), (1, "round 1"), (2, "round 2"), (4, "round 4")]
    assert spool.runs_with_lines() == []


class CountingClient(ControlPlane):
    """The real client, counting the metric POSTs under way at once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._count_lock = threading.Lock()
        self.under_way = 0
        self.most_at_once = 0

    def post_metrics(self, run_id, points):
        with self._count_lock:
            self.under_way += 1
            self.most_at_once = max(self.most_at_once, self.under_way)
        try:
            return super().post_metrics(run_id, points)
        finally:
            with self._count_lock:
                self.under_way -= 1


@pytest.mark.parametrize("in_flight", [1, 4])
def test_it_keeps_up_to_in_flight_batches_under_way_and_close_waits_for_them(
        own_server, hosted_run, tmp_path, in_flight):
    url, _, _ = own_server
    credential, job_id, run_id = hosted_run
    client = CountingClient(url, credential)
    client.start_job(job_id)
    reporter = HttpReporter(client, run_id, RunningJob(job_id), Spool(tmp_path / "spool"),
                            batch_size=20, in_flight=in_flight).start()
    for step in range(2000):
        reporter.metric("loss", step, 1.0 / (step + 1), sim_time_s=float(step))
    assert reporter.close()  # returns once every batch is answered: all stored now

    assert client.most_at_once == in_flight
    assert reporter.delivered == 2000
    assert points_of(run_id) == [("loss", step, 1.0 / (step + 1)) for step in range(2000)]


def test_batches_in_flight_when_the_server_stops_are_kept_and_stored_once(
        own_server, hosted_run, tmp_path):
    """The server goes away while several batches are under way (some stored, their answers
    lost): every unacknowledged point is spooled, and after the restart each point is stored
    exactly once."""
    url, start_server, stop_server = own_server
    credential, job_id, run_id = hosted_run
    client = ControlPlane(url, credential)
    client.start_job(job_id)
    spool = Spool(tmp_path / "spool")
    reporter = HttpReporter(client, run_id, RunningJob(job_id), spool, batch_size=25,
                            flush_interval_s=0.05, give_up_after_s=1.0, in_flight=4).start()
    total = 6000
    produced = threading.Event()

    def produce():
        for step in range(total):
            reporter.metric("loss", step, 1.0 / (step + 1), sim_time_s=float(step))
            if step % 25 == 0:
                time.sleep(0.002)  # a steady stream that spans the server's stop
        produced.set()

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: reporter.delivered >= 500, 60, "the first batches")
    stop_server()
    stored_while_down = len(points_of(run_id))
    assert stored_while_down < total
    wait_for(lambda: len(spool.points(run_id)) > 0, 60, "the unacknowledged points spooled")
    producer.join()
    start_server()
    assert reporter.close()

    assert not spool.points(run_id)
    assert points_of(run_id) == [("loss", step, 1.0 / (step + 1)) for step in range(total)]
    # Resent batches (stored before their answers were lost) counted once in the summaries.
    from controlplane.metrics.models import MetricBlock

    assert sum(MetricBlock.objects.filter(run_id=run_id, name="loss")
               .values_list("count", flat=True)) == total
