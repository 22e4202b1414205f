"""ConsumerWatch against a real Redis that stops and starts: what the heartbeat reports, and
when the worker is restarted."""
from agents.consumer_watch import ConsumerWatch
from tests.fixtures.redis_server import RedisServer


def test_it_reports_a_broker_outage_and_restarts_the_worker_once_it_is_back(tmp_path):
    redis = RedisServer.start_new(tmp_path / "redis")
    restarts: list[str] = []
    watch = ConsumerWatch(redis.url, restart_worker=lambda: restarts.append("restart"))
    try:
        assert watch.check() == {"consuming": False, "detail": "the worker is starting"}
        watch.ready()
        assert watch.check() == {"consuming": True, "detail": ""}

        redis.stop()
        state = watch.check()
        assert state["consuming"] is False
        assert state["detail"].startswith("broker unreachable since ")
        assert "Connection refused" in state["detail"]
        assert watch.check()["detail"] == state["detail"]  # since the first failed ping
        assert restarts == []

        redis.start()
        assert watch.check() == {
            "consuming": False,
            "detail": "the broker is back; restarting the worker (after a running job)"}
        assert restarts == ["restart"]
        watch.check()
        assert restarts == ["restart"]  # once per outage
        watch.ready()  # the new worker consumes
        assert watch.check() == {"consuming": True, "detail": ""}
    finally:
        redis.stop()
