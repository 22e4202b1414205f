"""A device's broker access reaches its own queue and nothing else.

Each test is an attack by device B (another tenant's enrolled device, with the broker URL and
credential its real enrolment gave it) on device A's queue, the control plane's queue or the
Channels layer, against the real Redis with ACL users; the broker must refuse every one.
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings

from controlplane.celery import device_queue
from controlplane.devices import actions, broker
from controlplane.devices.models import Device
from tests.fixtures.servers import EnrolledDevice, delete_broker_users, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def enrol(user, name: str, replaces: Device | None = None) -> EnrolledDevice:
    """Enrol through the real actions, committed, as the enrolment endpoint does (with the
    owner's replacement token for ``replaces``: a new credential for that device)."""
    _, secret = actions.create_enrolment_token(user, 1, replaces=replaces)
    enrolment = actions.enrol_device(secret, name, "jetson-nx", {})
    return EnrolledDevice(enrolment.device, enrolment.credential)


def broker_url_of(enrolled: EnrolledDevice) -> str:
    """The ``broker_url`` of the device's enrolment answer."""
    return broker.device_broker_url(settings.ESTUARY["PUBLIC_BROKER_URL"], enrolled.device.id,
                                    enrolled.credential)


def broker_as(enrolled: EnrolledDevice) -> redis.Redis:
    """A Redis client logged in exactly as the device's agent is told to at enrolment."""
    return redis.Redis.from_url(broker_url_of(enrolled), socket_timeout=5)


@pytest.fixture
def device_a(owner) -> EnrolledDevice:
    return enrol(owner, "victim-a")


@pytest.fixture
def device_b(outsider) -> EnrolledDevice:
    return enrol(outsider, "attacker-b")


@pytest.fixture
def attacker(device_b):
    client = broker_as(device_b)
    yield client
    client.close()


@pytest.fixture
def a_queue(device_a, redis_client) -> str:
    """Device A's queue, holding one job message, as the control plane would leave it."""
    queue = device_queue(device_a.device.id)
    redis_client.lpush(queue, b'{"job": "of A"}')
    return queue


class TestAnotherDevicesQueue:
    def test_it_refuses_listing_key_names(self, attacker, a_queue):
        for command in (("SCAN", 0), ("KEYS", "*"), ("RANDOMKEY",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attacker.execute_command(*command)

    @pytest.mark.parametrize("command", [
        ("LRANGE", "{q}", 0, -1), ("LPOP", "{q}"), ("RPOP", "{q}"), ("BRPOP", "{q}", 1),
        ("LLEN", "{q}"), ("LPUSH", "{q}", "forged job"), ("RPUSH", "{q}", "forged job"),
        ("DEL", "{q}"),
    ])
    def test_it_refuses_reading_or_pushing_it(self, attacker, a_queue, redis_client, command):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attacker.execute_command(*(arg.format(q=a_queue) if isinstance(arg, str) else arg
                                       for arg in command))
        assert redis_client.lrange(a_queue, 0, -1) == [b'{"job": "of A"}']

    def test_it_refuses_its_unacked_messages(self, attacker, device_a, redis_client):
        unacked = f"{device_queue(device_a.device.id)}.unacked"
        redis_client.hset(unacked, "tag", "a message A holds")
        for command in (("HGETALL", unacked), ("HGET", unacked, "tag"),
                        ("HDEL", unacked, "tag"), ("HGETALL", "unacked")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attacker.execute_command(*command)

    def test_it_refuses_its_bindings(self, attacker, device_a):
        """A binding of A's exchange to another queue would reroute A's messages."""
        binding = f"_kombu.binding.{device_queue(device_a.device.id)}"
        with pytest.raises(redis.exceptions.NoPermissionError):
            attacker.sadd(binding, "x\x06\x16\x06\x16" + device_queue(uuid.uuid4()))

    def test_a_script_runs_with_the_devices_own_rights(self, attacker, a_queue, redis_client):
        sha = attacker.script_load(f"return redis.call('rpop', '{a_queue}')")
        with pytest.raises(redis.exceptions.ResponseError, match="can't access .* keys"):
            attacker.evalsha(sha, 0)
        assert redis_client.llen(a_queue) == 1

    def test_it_refuses_the_control_plane_queue(self, attacker):
        queue = settings.ESTUARY["CONTROLPLANE_QUEUE"]
        for command in (("LPUSH", queue, "forged task"), ("BRPOP", queue, 1)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attacker.execute_command(*command)

    def test_it_refuses_admin_commands(self, attacker):
        for command in (("FLUSHDB",), ("CONFIG", "GET", "*"), ("ACL", "LIST"),
                        ("CLIENT", "LIST"), ("INFO",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attacker.execute_command(*command)


class TestTheChannelsLayer:
    def test_it_refuses_publishing(self, attacker):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attacker.publish("experiment.1", "forged point")

    def test_it_refuses_listening_to_an_experiments_live_events(self, attacker):
        """Live events go over pub/sub (controlplane.metrics.fanout): no device may subscribe."""
        from controlplane.metrics.fanout import channel_name

        channel = channel_name(f"experiment.{uuid.uuid4().hex}")
        for command in (("SUBSCRIBE", channel), ("PSUBSCRIBE", "*"), ("PUBLISH", channel, "x")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attacker.execute_command(*command)

    def test_it_refuses_group_send_into_a_dashboard(self, device_b):
        """channels_redis's own client, pointed at the broker as B: group_send is refused."""
        from channels_redis.core import RedisChannelLayer

        url = broker_url_of(device_b)
        config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
        layer = RedisChannelLayer(hosts=[url], prefix=config["prefix"])
        with pytest.raises(redis.exceptions.NoPermissionError):
            async_to_sync(layer.group_send)(f"experiment.{uuid.uuid4()}",
                                            {"type": "metrics.points", "points": []})

    def test_it_refuses_the_layers_keys(self, attacker, redis_client):
        prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        assert prefix == "estuary.asgi"
        group = f"{prefix}:group:experiment.{uuid.uuid4()}"
        for command in (("ZRANGE", group, 0, -1), ("ZADD", group, 1, "specific.x!y"),
                        ("LPUSH", f"{prefix}specific.x", "forged")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attacker.execute_command(*command)


class TestItsOwnQueue:
    def test_a_device_consumes_and_requeues_its_own_queue(self, device_b, attacker,
                                                          redis_client):
        from controlplane.experiments.actions import dispatch_job

        queue = device_queue(device_b.device.id)
        dispatch_job(uuid.uuid4(), str(uuid.uuid4()), device_b.device.id)
        _, message = attacker.brpop([queue], timeout=5)
        assert b"estuary.run_job" in message
        attacker.hset(f"{queue}.unacked", "tag", message)
        attacker.rpush(queue, message)
        assert redis_client.llen(queue) == 1

    def test_the_user_is_named_and_ruled_as_documented(self, device_b, redis_client):
        name = broker.broker_username(device_b.device.id)
        assert name == f"{settings.ESTUARY['BROKER_USER_PREFIX']}{device_b.device.id}"
        user = redis_client.acl_getuser(name)
        queue = device_queue(device_b.device.id)
        assert "on" in user["flags"]
        assert user["passwords"] == [device_b.device.credential_hash]
        assert not user["channels"]
        assert sorted(user["keys"]) == sorted([f"~{queue}*", f"~_kombu.binding.{queue}",
                                               f"~_kombu.binding_permanent.{queue}"])
        # Redis shows MULTI, EXEC, DISCARD, WATCH and UNWATCH as the category they make up.
        assert user["categories"] == ["-@all", "+@transaction"]
        transaction = {"multi", "exec", "discard", "watch", "unwatch"}
        assert ({rule.lstrip("+") for rule in user["commands"]} | transaction
                == set(broker.DEVICE_COMMANDS))


class TestLifecycle:
    def test_a_deleted_devices_user_no_longer_logs_in(self, device_b, attacker, redis_client):
        queue = device_queue(device_b.device.id)
        attacker.ping()
        redis_client.lpush(queue, "a job never run")
        actions.delete_device(device_b.device)
        with pytest.raises(redis.exceptions.AuthenticationError):
            broker_as(device_b).ping()
        assert not redis_client.exists(queue)

    def test_a_new_credential_locks_the_old_one_out_of_the_broker(self, outsider, device_b,
                                                                   attacker):
        attacker.ping()
        replaced = enrol(outsider, "attacker-b", replaces=device_b.device)
        assert replaced.device.id == device_b.device.id
        with pytest.raises(redis.exceptions.AuthenticationError):
            broker_as(device_b).ping()
        with pytest.raises(redis.exceptions.ConnectionError):  # its open connection is closed
            attacker.ping()
        assert broker_as(replaced).ping()

    def test_reenrolment_restores_a_lost_user(self, device_b, redis_client):
        redis_client.execute_command("ACL", "DELUSER", broker.broker_username(device_b.device.id))
        with pytest.raises(redis.exceptions.AuthenticationError):
            broker_as(device_b).ping()
        actions.reenrol_device(device_b.device, None, {})
        assert broker_as(device_b).ping()


# --- A throw-away Redis, for what restarts Redis or needs another admin ------------------------

@pytest.fixture
def own_redis(tmp_path, settings):
    """A redis-server of this test on a free port, started and restartable; the control plane
    of this process uses it as its REDIS_URL."""
    from agents.stack.redis import redis_argv, wait_for_redis

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    argv = redis_argv(port, Path(tmp_path), persist=False)

    class Server:
        process: subprocess.Popen

        def start(self) -> None:
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
            wait_for_redis(url)

        def stop(self) -> None:
            self.process.terminate()
            self.process.wait(timeout=10)

    server = Server()
    server.start()
    settings.REDIS_URL = url
    settings.ESTUARY = {**settings.ESTUARY, "PUBLIC_BROKER_URL": url}
    yield server
    server.stop()


class TestReconciliation:
    def test_it_recreates_users_after_a_redis_restart(self, own_redis, owner):
        from controlplane.devices.tasks import reconcile_broker_users

        device = enrol(owner, "edge-1")
        assert broker_as(device).ping()
        own_redis.stop()
        own_redis.start()  # no ACL file: the users are gone
        with pytest.raises(redis.exceptions.AuthenticationError):
            broker_as(device).ping()

        assert reconcile_broker_users() == {"granted": 1, "revoked": 0}
        assert broker_as(device).ping()

    def test_it_deletes_only_stale_users_of_its_own_prefix(self, own_redis, owner):
        device = enrol(owner, "edge-1")
        admin = broker.admin_client()
        stale = broker.broker_username(uuid.uuid4())
        admin.execute_command("ACL", "SETUSER", stale, "on", "nopass")
        admin.execute_command("ACL", "SETUSER", "someone-else", "on", "nopass")

        assert broker.reconcile_device_users() == broker.Reconciliation(granted=1, revoked=1)
        users = {u.decode() for u in admin.execute_command("ACL", "USERS")}
        assert stale not in users
        assert {"someone-else", broker.broker_username(device.device.id)} <= users

    def test_the_reconciler_is_on_the_beat_schedule(self):
        entry = settings.CELERY_BEAT_SCHEDULE["reconcile-broker-users"]
        assert entry["task"] == "devices.reconcile_broker_users"
        assert entry["options"]["queue"] == settings.ESTUARY["CONTROLPLANE_QUEUE"]

    def test_a_broker_change_that_fails_never_fails_the_enrolment(self, own_redis, owner):
        own_redis.stop()
        device = enrol(owner, "edge-1")  # committed; the user could not be created
        own_redis.start()
        with pytest.raises(redis.exceptions.AuthenticationError):
            broker_as(device).ping()
        broker.reconcile_device_users()
        assert broker_as(device).ping()


class TestTheBrokerCheck:
    def test_it_passes_with_an_admin(self, redis_url):
        assert broker.broker_problems(redis_url) == []

    def test_it_fails_loudly_when_the_control_plane_cannot_manage_users(self, redis_url,
                                                                        redis_client, settings):
        from controlplane.checks import check_broker_confines_devices

        name = f"{settings.ESTUARY['BROKER_USER_PREFIX']}no-acl-{uuid.uuid4().hex[:8]}"
        redis_client.execute_command("ACL", "SETUSER", name, "on", ">pw", "~*", "&*", "+@all",
                                     "-acl")
        try:
            url = redis_url.replace("redis://", f"redis://{name}:pw@")
            problems = broker.broker_problems(url)
            assert len(problems) == 1 and "cannot manage ACL users" in problems[0]
            settings.REDIS_URL = url
            assert [error.id for error in check_broker_confines_devices()] == ["estuary.E007"]
        finally:
            delete_broker_users(redis_url, name)

    def test_it_warns_when_redis_does_not_answer(self, settings):
        from controlplane.checks import check_broker_confines_devices

        settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
        assert [error.id for error in check_broker_confines_devices()] == ["estuary.W002"]
