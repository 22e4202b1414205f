import pytest

from controlplane.experiments.models import Run


@pytest.fixture
def hosted_run(owner, device_factory, experiment_factory):
    """(agent, run): the owner's FedAvg run hosted by the owner's online device."""
    agent = device_factory(owner)
    experiment = experiment_factory(owner, host=agent.device)
    return agent, Run.objects.get(experiment=experiment)


def point(name="accuracy", step=1, value=0.5, **changes):
    return {"name": name, "step": step, "value": value, "sim_time_s": step * 2.0,
            "wall_time_s": step * 0.25, **changes}
