"""Each device's identity at the broker: a Redis ACL user that reaches only its own queue.

An agent logs in to Redis as ``<BROKER_USER_PREFIX><device id>`` with its device credential.
Redis takes an ACL password as ``#<SHA-256 hex>``, which is exactly ``Device.credential_hash``,
so the server never stores a broker password. The user's rules (:func:`device_acl_rules`):

- keys: the device's queue ``device.<id>`` and every key whose name starts with it (kombu's
  priority lists ``device.<id>\\x06\\x16<n>``, the agent's unacked hash, index and mutex
  ``device.<id>.unacked*``, see agents/worker.py), and kombu's two binding sets of that queue;
- channels: none (Celery's remote control, events, gossip and mingle are off in the agent);
- commands: only :data:`DEVICE_COMMANDS`, what a Celery consumer of the Redis transport runs.
  SCAN, KEYS and RANDOMKEY list every key name whatever the key patterns, so they are absent.

The Channels layer (prefix ``estuary.asgi``), the control plane's queue and every other device's
keys are thereby out of reach. The control plane itself connects with ``REDIS_URL`` (an admin).

Users are created when a device enrols (re-asserted at re-enrolment) and deleted when it is
deleted, on commit. Users live in Redis's memory only: :func:`reconcile_device_users` (a beat
task) re-creates lost ones after a Redis restart and deletes those of deleted devices. It only
ever touches users whose name starts with ``BROKER_USER_PREFIX``: one prefix per deployment
that shares a Redis. See docs/controlplane.md, "Broker access".
"""
from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

#: The commands a device user may run: what kombu's Redis transport (and redis-py's lock, whose
#: release is a Lua script) runs for a Celery consumer with late acks, read from Redis's ACL LOG
#: and MONITOR with a real agent worker. BRPOP/RPOP take messages; LLEN sizes the queue at
#: declaration; SADD/SMEMBERS bind it; HSET/HGET/HDEL and ZADD/ZREM/ZRANGE keep the unacked
#: messages; SET/GET/DEL/EVALSHA/SCRIPT LOAD are the restore mutex; LPUSH/RPUSH requeue;
#: MULTI/EXEC/DISCARD/WATCH/UNWATCH make pipelines transactional. Lua runs with the same rules.
DEVICE_COMMANDS: tuple[str, ...] = (
    "ping", "select",
    "brpop", "rpop", "lpush", "rpush", "llen",
    "sadd", "smembers",
    "hset", "hget", "hdel",
    "zadd", "zrem", "zrange", "zrevrangebyscore",
    "set", "get", "del",
    "evalsha", "script|load",
    "multi", "exec", "discard", "watch", "unwatch",
)

#: kombu's binding sets of a queue (kombu.transport.redis.Channel.keyprefix_queue and
#: keyprefix_binding_permanent).
BINDING_KEYS: tuple[str, ...] = ("_kombu.binding.{queue}", "_kombu.binding_permanent.{queue}")

#: Redis 6.2 brought channel permissions (``resetchannels``); before it every user may publish.
MIN_REDIS_VERSION = (6, 2)


def broker_username(device_id: uuid.UUID | str) -> str:
    """The Redis ACL user of a device."""
    return f"{settings.ESTUARY['BROKER_USER_PREFIX']}{device_id}"


def device_key_patterns(device_id: uuid.UUID | str) -> list[str]:
    """The key patterns (ACL ``~`` rules, without the tilde) a device may touch."""
    from controlplane.celery import device_queue

    queue = device_queue(device_id)
    return [f"{queue}*", *(key.format(queue=queue) for key in BINDING_KEYS)]


def device_acl_rules(device_id: uuid.UUID | str, credential_hash: str) -> list[str]:
    """The ``ACL SETUSER`` rules of a device's user; applying them is idempotent.

    ``reset`` first, so a rule added by hand never survives a re-assertion; ``resetchannels``
    after it, because on Redis 6.2 ``reset`` grants every channel.
    """
    if len(credential_hash) != 64 or any(c not in "0123456789abcdef" for c in credential_hash):
        raise ValueError("credential_hash must be a lowercase SHA-256 hex digest")
    return ["reset", "on", f"#{credential_hash}", "resetchannels", "-@all",
            *(f"+{command}" for command in DEVICE_COMMANDS),
            *(f"~{pattern}" for pattern in device_key_patterns(device_id))]


def device_broker_url(public_url: str, device_id: uuid.UUID | str, credential: str) -> str:
    """``public_url`` with the device's own user and credential as its userinfo."""
    parts = urlsplit(public_url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(broker_username(device_id), safe='')}:{quote(credential, safe='')}"
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query,
                       parts.fragment))


def without_userinfo(url: str) -> str:
    """``url`` with any user and password taken out."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query,
                       parts.fragment))


def admin_client() -> redis.Redis:
    """A client of the control plane's own Redis identity (``REDIS_URL``)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def grant_device(device_id: uuid.UUID | str, credential_hash: str, *,
                 disconnect: bool = False, client: redis.Redis | None = None) -> None:
    """Create or re-assert the device's broker user.

    ``disconnect`` (a new credential replaced the old one) also closes the connections that
    logged in with the old credential: Redis keeps a connection's login across ``SETUSER``.
    """
    client = client or admin_client()
    username = broker_username(device_id)
    client.execute_command("ACL", "SETUSER", username, *device_acl_rules(device_id,
                                                                         credential_hash))
    if disconnect:
        client.execute_command("CLIENT", "KILL", "USER", username)


def revoke_device(device_id: uuid.UUID | str, *, client: redis.Redis | None = None) -> None:
    """Delete the device's broker user (which closes its connections) and its broker keys."""
    from controlplane.celery import device_queue

    client = client or admin_client()
    client.execute_command("ACL", "DELUSER", broker_username(device_id))
    queue = device_queue(device_id)
    keys = [*(key.format(queue=queue) for key in BINDING_KEYS),
            *client.scan_iter(match=f"{queue}*", count=1000)]
    client.delete(*keys)


@dataclass(frozen=True)
class Reconciliation:
    """What :func:`reconcile_device_users` did."""

    granted: int
    revoked: int


def reconcile_device_users(client: redis.Redis | None = None) -> Reconciliation:
    """Re-assert the broker user of every device and delete the users of deleted devices.

    The users are listed before the devices are read, so a device enrolled meanwhile (its user
    created on commit) is never taken for a deleted one.
    """
    from controlplane.devices.models import Device

    client = client or admin_client()
    prefix = settings.ESTUARY["BROKER_USER_PREFIX"]
    existing = {name.decode() if isinstance(name, bytes) else name
                for name in client.execute_command("ACL", "USERS")}
    ours = {name for name in existing if name.startswith(prefix)}
    devices = list(Device.objects.values_list("id", "credential_hash"))
    with client.pipeline(transaction=False) as pipe:
        for device_id, credential_hash in devices:
            pipe.execute_command("ACL", "SETUSER", broker_username(device_id),
                                 *device_acl_rules(device_id, credential_hash))
        pipe.execute()
    stale = ours - {broker_username(device_id) for device_id, _ in devices}
    for username in stale:
        client.execute_command("ACL", "DELUSER", username)
    return Reconciliation(granted=len(devices), revoked=len(stale))


def apply_on_commit(change: Callable[..., None], *args, **kwargs) -> None:
    """Apply a broker change once the current transaction commits.

    Best-effort: the database change has committed, so a broker failure is logged, never
    raised; the next reconciliation applies it.
    """
    def apply() -> None:
        try:
            change(*args, **kwargs)
        except redis.RedisError:
            log.exception("broker ACL change %s failed; the reconciler will retry it",
                          change.__name__)

    transaction.on_commit(apply)


def broker_problems(url: str) -> list[str]:
    """Why the Redis at ``url`` cannot confine devices with ACL users (empty when it can).

    Checks the version (channel permissions) and that this identity may create and delete
    users, by creating and deleting a disabled probe user.
    """
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        version = str(client.info("server").get("redis_version", "0"))
        numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if numbers < MIN_REDIS_VERSION:
            return [f"Redis {version} has no ACL channel permissions; Estuary needs Redis >= "
                    f"{'.'.join(map(str, MIN_REDIS_VERSION))}."]
        probe = f"{settings.ESTUARY['BROKER_USER_PREFIX']}probe-{secrets.token_hex(8)}"
        client.execute_command("ACL", "SETUSER", probe, "reset", "off")
        client.execute_command("ACL", "DELUSER", probe)
    except redis.ResponseError as exc:
        return [f"The REDIS_URL identity cannot manage ACL users ({exc}); it needs the "
                "permission to run ACL SETUSER, ACL DELUSER, ACL USERS and CLIENT KILL."]
    finally:
        client.close()
    return []

