"""A socket's subscription to this process's fan-out (controlplane.metrics.fanout): order, and
what becomes of a socket that falls behind. Delivery across real processes is in test_live.py."""
import asyncio

from controlplane.metrics import fanout


def drained(subscription: fanout.Subscription) -> list:
    """Everything queued for the subscription, up to and including ENDED if it ended."""
    async def take() -> list:
        items = []
        while not subscription._queue.empty():
            items.append(await subscription.get())
        return items
    return asyncio.run(take())


def subscription() -> fanout.Subscription:
    return fanout.Subscription(fanout._Hub(), "experiment.test")


def test_events_come_in_the_order_delivered():
    sub = subscription()
    for index in range(5):
        sub.deliver(f"event {index}")
    assert drained(sub) == [f"event {index}" for index in range(5)]


def test_a_socket_that_falls_too_far_behind_is_ended_not_fed_a_gap():
    """Beyond MAX_PENDING waiting events the socket gets ENDED (it closes with 4503 and the page
    reconnects to a fresh history), never a stream with events missing."""
    sub = subscription()
    for index in range(fanout.MAX_PENDING + 1):
        sub.deliver(f"event {index}")
    sub.deliver("after the end")
    assert drained(sub) == [fanout.ENDED]


def test_a_socket_that_keeps_up_is_never_ended():
    sub = subscription()
    for index in range(fanout.MAX_PENDING + 5):
        sub.deliver(f"event {index}")
        assert drained(sub) == [f"event {index}"]
    assert not sub.ended
