"""The heartbeat thread keeps the device alive whatever else is slow: against a server that
accepts connections and never answers (as a stopping server can), each heartbeat is given up
after two intervals and the next goes out on a fresh connection, rather than one heartbeat
holding the thread for the client's 30 s read timeout, past the missed-heartbeats window; and
heartbeats go on while spooled data is being resent after an outage."""
import socket
import threading
import time

import pytest

from agents.client import DEFAULT_TIMEOUT, ControlPlane
from agents.heartbeat import Heartbeat, heartbeat_timeout
from agents.tracker import JobTracker
from tests.fixtures.agents import wait_for


class BlackHole:
    """A TCP server that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()


def test_heartbeats_to_a_server_that_never_answers_are_given_up_and_sent_again():
    hole = BlackHole()
    beat = Heartbeat(ControlPlane(f"http://127.0.0.1:{hole.port}", "credential"),
                     JobTracker(threading.Event()), interval_s=0.2)
    beat.start()
    try:
        deadline = time.monotonic() + 30
        while len(hole.accepted) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        beat.stop()
        hole.close()
    # With the client's default read timeout (30 s) the first heartbeat would still be waiting.
    assert len(hole.accepted) >= 3


def test_a_heartbeat_waits_at_most_two_intervals_within_the_clients_defaults():
    assert heartbeat_timeout(10) == (DEFAULT_TIMEOUT[0], 20)
    assert heartbeat_timeout(1) == (2, 2)
    assert heartbeat_timeout(0.1) == (1, 1)
    assert heartbeat_timeout(3600) == DEFAULT_TIMEOUT


@pytest.mark.django_db(transaction=True)
def test_heartbeats_go_on_while_spooled_data_is_being_resent(asgi_server, owner,
                                                             device_factory):
    enrolled = device_factory(owner, name="resending")
    resending, release = threading.Event(), threading.Event()
    resends = []

    def slow_resend() -> None:  # as a spool of many batches to a busy server would be
        resends.append(1)
        resending.set()
        release.wait(60)

    beat = Heartbeat(ControlPlane(asgi_server, enrolled.credential),
                     JobTracker(threading.Event()), interval_s=0.2, after_beat=slow_resend)
    beat.start()
    try:
        assert resending.wait(60)
        answered = beat.beats
        wait_for(lambda: beat.beats >= answered + 3, 60, "heartbeats during the resend")
        assert len(resends) == 1  # one resend at a time: the later beats did not start more
    finally:
        release.set()
        beat.stop()
