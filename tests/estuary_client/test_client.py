"""The client's calls against a real server: pages followed, errors as exceptions."""
import pytest

from estuary_client import AuthFailed, Client, InvalidInput, NotFound
from tests.fixtures.servers import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_follows_every_page_of_a_list(owner, outsider, device_factory, experiment_factory,
                                          asgi_server):
    host = device_factory(owner).device
    made = {str(experiment_factory(owner, host=host, name=f"e{i}").id) for i in range(3)}
    experiment_factory(outsider, host=device_factory(outsider).device, name="not mine")
    client = Client(asgi_server, owner.api_token)
    listed = [e.id for e in client.list_experiments(page_size="1")]
    assert sorted(listed) == sorted(made)
    assert [e.name for e in client.list_experiments(name="e1")] == ["e1"]
    runs = list(client.list_runs(page_size="2"))
    assert len(runs) == 3


def test_a_400_carries_each_field_at_fault(owner, asgi_server):
    client = Client(asgi_server, owner.api_token)
    with pytest.raises(InvalidInput) as refused:
        client.create_experiment(name="bad", algorithm="fedavg",
                                 config={"rounds": 0, "lr": "fast"}, preset="local-3")
    assert set(refused.value.fields) == {"config.rounds", "config.lr"}
    with pytest.raises(InvalidInput) as refused:
        list(client.list_experiments(status="sleeping"))
    assert set(refused.value.fields) == {"status"}


def test_other_users_objects_and_bad_tokens_are_refused(owner, outsider, device_factory,
                                                        experiment_factory, asgi_server):
    experiment = experiment_factory(owner, host=device_factory(owner).device)
    with pytest.raises(NotFound):
        Client(asgi_server, outsider.api_token).rerun_experiment(str(experiment.id))
    with pytest.raises(AuthFailed):
        list(Client(asgi_server, "0" * 40).list_devices())
    token = Client(asgi_server).login(owner.username, PASSWORD)
    assert token == owner.api_token
