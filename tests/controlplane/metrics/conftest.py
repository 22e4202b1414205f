import pytest

from controlplane.experiments.models import Run


@pytest.fixture
def hosted_run(owner, device_factory, experiment_factory):
    """(agent, run): the owner's FedAvg run hosted by the owner's online device."""
    agent = device_factory(owner)
    experiment = experiment_factory(owner, host=agent.device)
    return agent, Run.objects.get(experiment=experiment)
