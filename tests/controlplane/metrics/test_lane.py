"""The database lane (controlplane.db_lane): agents' reports on threads whose connections
persist across requests, replaced when they break, and confined to those threads."""
import pytest
import requests
from django.db import connection, connections, transaction

from controlplane.db_lane import APPLICATION_NAME, DatabaseLane
from controlplane.metrics.models import MetricPoint
from tests.controlplane.metrics.points import point

pytestmark = pytest.mark.django_db(transaction=True)


def backend_id() -> object:
    """The calling thread's database session: PostgreSQL's backend pid, or the SQLite connection
    itself (kept alive by the caller, so a new one cannot reuse its id)."""
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    return connection.connection


@pytest.fixture
def lane():
    lane = DatabaseLane(threads=1, max_age_s=600, name="test-lane")
    yield lane
    lane.submit(connections.close_all).result()  # a PostgreSQL test database is dropped later


class TestDatabaseLane:
    def test_its_connection_persists_across_calls_and_others_do_not(self, lane):
        first = lane.submit(backend_id).result()
        assert lane.submit(backend_id).result() == first
        # The process's other threads keep the settings' CONN_MAX_AGE (0): one per request.
        assert connection.settings_dict["CONN_MAX_AGE"] == 0

    def test_a_call_that_leaves_a_transaction_open_gets_a_new_connection(self, lane):
        def leave_open() -> object:
            transaction.set_autocommit(False)
            MetricPoint.objects.count()
            return backend_id()

        left = lane.submit(leave_open).result()
        assert lane.submit(backend_id).result() != left
        assert lane.submit(MetricPoint.objects.count).result() == 0

    def test_each_call_starts_with_an_empty_query_log(self, lane):
        def logged_queries() -> int:  # then one more, logged as with DEBUG on
            before = len(connection.queries_log)
            connection.force_debug_cursor = True
            MetricPoint.objects.count()
            return before

        lane.submit(logged_queries).result()
        assert lane.submit(logged_queries).result() == 0


def lane_backends() -> set[int]:
    """PostgreSQL backends of the database lane on the test database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name = %s", [APPLICATION_NAME])
        return {pid for pid, in cursor.fetchall()}


def test_reports_keep_a_connection_and_survive_its_backend_being_killed(asgi_server,
                                                                        hosted_run):
    if connection.vendor != "postgresql":
        pytest.skip("a backend to kill needs PostgreSQL")
    agent, run = hosted_run
    url = f"{asgi_server}/api/v1/runs/{run.id}/metrics/"
    http = requests.Session()
    http.headers["Authorization"] = f"Device {agent.credential}"

    def report(step: int) -> None:
        response = http.post(url, json={"points": [point(step=step)]}, timeout=10)
        assert response.status_code == 200, response.text

    report(0)
    kept = lane_backends()
    for step in range(1, 5):
        report(step)
    assert kept and lane_backends() <= kept  # persisted: no new backend per request
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid",
                       [sorted(kept)])
    report(5)  # the health check replaces the dead connection: no 500
    replaced = lane_backends()
    assert replaced and not replaced & kept
    assert MetricPoint.objects.filter(run=run).count() == 6


def test_the_lane_answers_as_the_view_does(asgi_server, hosted_run, outsider, device_factory):
    """Through daphne (the lane): the stored batch, and the refusals of test_ingest."""
    agent, run = hosted_run
    url = f"{asgi_server}/api/v1/runs/{run.id}/metrics/"

    def post(body: dict, credential: str | None) -> requests.Response:
        headers = {"Authorization": f"Device {credential}"} if credential else {}
        return requests.post(url, json=body, headers=headers, timeout=10)

    good = {"points": [point(step=1), point(step=2)]}
    assert post(good, agent.credential).json() == {"accepted": 2, "cancelled": False}
    assert post(good, device_factory(outsider).credential).status_code == 403
    assert post(good, None).status_code == 401
    bad = post({"points": [point(step=3), {**point(step=4), "step": -1}]}, agent.credential)
    assert bad.status_code == 400 and "step" in bad.json()["points"]["1"]
    assert MetricPoint.objects.filter(run=run).count() == 2
