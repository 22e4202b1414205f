"""An agent joins only a well-formed rendezvous, as the control plane handed it."""
import pytest

from agents.jobs import RendezvousRefused, checked_rendezvous

GOOD = {"host": "10.0.0.7", "port": 29500, "prefix": "0123456789abcdef0123456789abcdef",
        "timeout_s": 30}


def test_a_good_rendezvous_is_taken_as_given():
    assert checked_rendezvous(GOOD, coordinator=False) == {**GOOD, "timeout_s": 30.0}
    assert checked_rendezvous({**GOOD, "port": 0}, coordinator=True)["port"] == 0


@pytest.mark.parametrize("change", [
    {"host": ""}, {"host": None}, {"port": 0}, {"port": 70000}, {"port": "29500"},
    {"port": True}, {"prefix": ""}, {"prefix": "short"}, {"timeout_s": 0},
    {"timeout_s": "30"}])
def test_anything_else_is_refused(change):
    with pytest.raises(RendezvousRefused):
        checked_rendezvous({**GOOD, **change}, coordinator=False)


def test_a_non_object_is_refused():
    with pytest.raises(RendezvousRefused):
        checked_rendezvous(["10.0.0.7", 29500], coordinator=False)
