"""A socket's subscription to this process's fan-out (controlplane.metrics.fanout): order, and
what becomes of a socket that falls behind. Delivery across real processes is in test_live.py."""
import asyncio
import uuid

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
    """Beyond MAX_PENDING waiting events the socket gets ENDED, marked ``behind`` (it closes
    with 4008 and the page reconnects to a fresh history), never a stream with events missing."""
    sub = subscription()
    for index in range(fanout.MAX_PENDING + 1):
        sub.deliver(f"event {index}")
    sub.deliver("after the end")
    assert drained(sub) == [fanout.ENDED]
    assert sub.behind


def test_a_socket_that_keeps_up_is_never_ended():
    sub = subscription()
    for index in range(fanout.MAX_PENDING + 5):
        sub.deliver(f"event {index}")
        assert drained(sub) == [f"event {index}"]
    assert not sub.ended


def numsub(channel: str) -> int:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return dict(client.pubsub_numsub(channel))[channel.encode()]
    finally:
        client.close()


def test_a_process_subscribes_once_per_experiment_and_leaves_with_its_last_socket():
    """Against the real Redis: two sockets of one experiment share the process's subscription;
    it ends with the last; a later socket subscribes again and gets what is published."""
    import redis
    from django.conf import settings

    group = f"experiment.{uuid.uuid4().hex}"
    channel = fanout.channel_name(group)

    async def main() -> None:
        first = await asyncio.wait_for(fanout.subscribe(group), 5)
        second = await asyncio.wait_for(fanout.subscribe(group), 5)
        assert numsub(channel) == 1
        publisher = redis.Redis.from_url(settings.REDIS_URL)
        assert publisher.publish(channel, "one") == 1
        assert [await asyncio.wait_for(s.get(), 5) for s in (first, second)] == ["one", "one"]
        first.close()
        second.close()
        for _ in range(50):
            if numsub(channel) == 0:
                break
            await asyncio.sleep(0.02)
        assert numsub(channel) == 0
        third = await asyncio.wait_for(fanout.subscribe(group), 5)
        assert publisher.publish(channel, "two") == 1
        assert await asyncio.wait_for(third.get(), 5) == "two"
        third.close()
        publisher.close()

    asyncio.run(main())


def test_a_lost_subscriber_connection_ends_every_subscription():
    """No silent loss: when the process's connection to Redis breaks, its sockets are ended
    (they close 4503 and the page reloads the history); the next join connects afresh."""
    group = f"experiment.{uuid.uuid4().hex}"

    async def main() -> None:
        sub = await asyncio.wait_for(fanout.subscribe(group), 5)
        hub = fanout._hubs[asyncio.get_running_loop()]
        hub.current.redis._writer.transport.abort()  # as when Redis goes away
        assert await asyncio.wait_for(sub.get(), 5) is fanout.ENDED
        assert not sub.behind  # 4503, not 4008
        again = await asyncio.wait_for(fanout.subscribe(group), 5)
        assert numsub(fanout.channel_name(group)) == 1
        again.close()

    asyncio.run(main())
