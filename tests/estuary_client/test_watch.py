"""``Experiment.watch()`` against a real server and agent: every point once, token refusals."""
import pytest

from estuary_client import AuthFailed, Client, Ended, NotFound, Point, RunChanged
from estuary_client.client import Experiment

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"rounds": 3, "dataset": "digits", "workers": 2}


def test_it_yields_every_point_once_then_the_end(agent_factory, owner, asgi_server):
    agent = agent_factory("cloud-watch")
    client = Client(asgi_server, owner.api_token)
    experiment = client.create_experiment(name="watched", algorithm="fedavg", config=SMALL,
                                          preset="local-3", host=agent.device_id)
    events = list(experiment.watch(timeout_s=120))

    assert isinstance(events[-1], Ended)
    assert events[-1].status == "succeeded"
    points = [event for event in events if isinstance(event, Point)]
    keys = [(p.run, p.name, p.step) for p in points]
    assert len(keys) == len(set(keys)), "a point was yielded twice"
    run_id = experiment.runs[0]["id"]
    stored = {(run_id, p["name"], p["step"]): p["value"] for p in client.run_metrics(run_id)}
    assert {(p.run, p.name, p.step): p.value for p in points} == stored
    # They came live, before the run's end, not only from the final fill.
    ended_at = next(i for i, event in enumerate(events) if isinstance(event, RunChanged)
                    and event.run["state"] == "succeeded")
    assert any(isinstance(event, Point) for event in events[:ended_at])
    states = [event.run["state"] for event in events if isinstance(event, RunChanged)]
    assert states[-1] == "succeeded"


def test_another_users_token_is_refused_on_the_socket(
        owner, outsider, device_factory, experiment_factory, asgi_server):
    experiment = experiment_factory(owner, host=device_factory(owner).device)
    data = {"id": str(experiment.id), "status": "running", "runs": []}

    with pytest.raises(NotFound):
        next(Experiment(Client(asgi_server, outsider.api_token), data).watch(timeout_s=30))
    with pytest.raises(AuthFailed):
        next(Experiment(Client(asgi_server, "0" * 40), data).watch(timeout_s=30))
    # The owner's token is accepted: the first event is the run's state from the history.
    first = next(Experiment(Client(asgi_server, owner.api_token), data).watch(timeout_s=30))
    assert isinstance(first, RunChanged) and first.run["state"] == "queued"
