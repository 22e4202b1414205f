"""Enrolment tokens and agent enrolment: POST /api/v1/enrolment-tokens/, /agents/enrol/."""
from datetime import timedelta
from hashlib import sha256
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.utils import timezone

from controlplane.devices.actions import create_enrolment_token
from controlplane.devices.broker import broker_username, device_broker_url
from controlplane.devices.models import Device, EnrolmentToken
from ml.testbed.profiles import PROFILES

TOKENS = "/api/v1/enrolment-tokens/"
ENROL = "/api/v1/agents/enrol/"
HEARTBEAT = "/api/v1/agents/heartbeat/"


@pytest.mark.django_db
class TestEnrolmentTokens:
    def test_it_creates_a_token_stored_hashed(self, api, owner):
        response = api(owner).post(TOKENS, {"ttl_hours": 2})
        assert response.status_code == 201
        body = response.json()
        token = EnrolmentToken.objects.get(owner=owner)
        assert token.token_hash == sha256(body["token"].encode()).hexdigest()
        assert timedelta(hours=1.9) < token.expires_at - timezone.now() < timedelta(hours=2)

    def test_it_defaults_to_a_day(self, api, owner):
        api(owner).post(TOKENS, {})
        token = EnrolmentToken.objects.get(owner=owner)
        assert timedelta(hours=23.9) < token.expires_at - timezone.now() <= timedelta(hours=24)

    @pytest.mark.parametrize("ttl", [0, -1, 10_000, "soon", None])
    def test_it_rejects_a_bad_ttl(self, api, owner, ttl):
        response = api(owner).post(TOKENS, {"ttl_hours": ttl})
        assert response.status_code == 400
        assert "ttl_hours" in response.json()
        assert not EnrolmentToken.objects.exists()

    def test_it_rejects_unknown_fields(self, api, owner):
        response = api(owner).post(TOKENS, {"ttl": 3})
        assert response.status_code == 400
        assert "ttl" in response.json()

    def test_it_refuses_anonymous_users(self, api):
        assert api().post(TOKENS, {}).status_code == 401

    def test_it_refuses_devices(self, api, owner, device_factory):
        agent = device_factory(owner)
        assert api(device=agent.credential).post(TOKENS, {}).status_code == 403
        assert api(device=agent.credential).get(TOKENS).status_code == 403

    def test_it_lists_the_owners_tokens_but_never_their_secrets(self, api, owner, outsider):
        first = api(owner).post(TOKENS, {"ttl_hours": 2, "note": "lab bench"}).json()
        api(outsider).post(TOKENS, {"note": "outsider's token"})
        response = api(owner).get(TOKENS)
        assert response.status_code == 200
        listed = listing(response)
        assert [token["id"] for token in listed] == [first["id"]]
        assert listed[0]["note"] == "lab bench"
        assert (listed[0]["status"], listed[0]["revoked"], listed[0]["uses"]) == ("active",
                                                                                  False, 0)
        assert first["token"] not in response.content.decode()
        assert "token" not in listed[0] and "token_hash" not in listed[0]

    def test_it_counts_the_uses_of_a_token(self, api, owner):
        secret = api(owner).post(TOKENS, {}).json()["token"]
        for name in ("a", "b"):
            assert api().post(ENROL, enrol_body(secret, name=name)).status_code == 201
        listed = listing(api(owner).get(TOKENS))
        assert listed[0]["uses"] == 2 and listed[0]["last_used"]

    def test_a_revoked_token_enrols_nothing_more(self, api, owner):
        created = api(owner).post(TOKENS, {}).json()
        assert api().post(ENROL, enrol_body(created["token"], name="before")).status_code == 201
        response = api(owner).post(f"{TOKENS}{created['id']}/revoke/")
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["revoked"]) == ("revoked", True)
        refused = api().post(ENROL, enrol_body(created["token"], name="after"))
        assert refused.status_code == 400
        assert "revoked" in refused.json()["token"][0]
        assert not Device.objects.filter(name="after").exists()
        assert Device.objects.filter(name="before").exists()  # its devices stay enrolled

    def test_another_tenant_cannot_revoke_or_see_a_token(self, api, owner, outsider):
        created = api(owner).post(TOKENS, {}).json()
        assert api(outsider).post(f"{TOKENS}{created['id']}/revoke/").status_code == 404
        assert api().post(f"{TOKENS}{created['id']}/revoke/").status_code == 401
        assert EnrolmentToken.objects.get(pk=created["id"]).revoked_at is None
        assert listing(api(outsider).get(TOKENS)) == []

    def test_it_refuses_a_replacement_token_for_another_tenants_device(
            self, api, owner, outsider, device_factory):
        victim = device_factory(outsider).device
        response = api(owner).post(TOKENS, {"replace_device": str(victim.id)})
        assert response.status_code == 400
        assert "replace_device" in response.json()
        assert not EnrolmentToken.objects.filter(replaces=victim).exists()


def listing(response) -> list[dict]:
    """The items of a list answer, paginated or not."""
    body = response.json()
    return body["results"] if isinstance(body, dict) else body


@pytest.fixture
def token(owner):
    return create_enrolment_token(owner, 1)[1]


def enrol_body(token, **changes):
    return {"token": token, "name": "jetson-07", "profile": "jetson-orin-nano",
            "overrides": {}, **changes}


@pytest.mark.django_db
class TestEnrol:
    def test_it_enrols_a_device(self, api, owner, token):
        response = api().post(ENROL, enrol_body(token, overrides={"rtt_ms": 42}))
        assert response.status_code == 201
        body = response.json()
        device = Device.objects.get(pk=body["device_id"])
        assert device.owner == owner and device.name == "jetson-07"
        profile = PROFILES["jetson-orin-nano"]
        assert (device.kind, device.compute_gflops, device.uplink_mbps) == (
            profile.kind, profile.compute_gflops, profile.uplink_mbps)
        assert device.rtt_ms == 42
        assert body["queue"] == f"device.{device.id}"
        assert body["broker_url"] == device_broker_url(settings.ESTUARY["PUBLIC_BROKER_URL"],
                                                       device.id, body["credential"])
        assert urlsplit(body["broker_url"]).username == broker_username(device.id)
        assert body["heartbeat_interval_s"] == settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
        assert device.status() == "online"

    def test_it_stores_the_credential_hashed(self, api, token):
        credential = api().post(ENROL, enrol_body(token)).json()["credential"]
        device = Device.objects.get()
        assert device.credential_hash == sha256(credential.encode()).hexdigest()
        stored = [str(value) for value in Device.objects.values().get().values()]
        assert credential not in stored
        assert api(device=credential).post(HEARTBEAT, {}).status_code == 200

    def test_it_rejects_a_bad_token(self, api, token):
        response = api().post(ENROL, enrol_body(token + "x"))
        assert response.status_code == 400
        assert "token" in response.json()
        assert not Device.objects.exists()

    def test_it_rejects_an_expired_token(self, api, owner, token):
        EnrolmentToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        response = api().post(ENROL, enrol_body(token))
        assert response.status_code == 400
        assert "expired" in response.json()["token"][0]
        assert not Device.objects.exists()

    def test_it_accepts_a_token_many_times(self, api, token):
        assert api().post(ENROL, enrol_body(token, name="a")).status_code == 201
        assert api().post(ENROL, enrol_body(token, name="b")).status_code == 201
        assert Device.objects.count() == 2

    def test_it_rejects_an_unknown_profile(self, api, token):
        response = api().post(ENROL, enrol_body(token, profile="jetson-9000"))
        assert response.status_code == 400
        assert "jetson-nx" in response.json()["profile"][0]  # lists the known ones
        assert not Device.objects.exists()

    @pytest.mark.parametrize("overrides, field", [
        ({"warp_drive": 1}, "warp_drive"),
        ({"uplink_mbps": 0}, "uplink_mbps"),
        ({"rtt_ms": -1}, "rtt_ms"),
        ({"kind": "fog"}, "kind"),
        ({"memory_mib": "lots"}, "memory_mib"),
    ])
    def test_it_rejects_bad_overrides(self, api, token, overrides, field):
        response = api().post(ENROL, enrol_body(token, overrides=overrides))
        assert response.status_code == 400
        assert field in response.json()["overrides"]

    @pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 64, "ünï"])
    def test_it_rejects_bad_names(self, api, token, name):
        response = api().post(ENROL, enrol_body(token, name=name))
        assert response.status_code == 400
        assert "name" in response.json()

    def test_it_rejects_malformed_json(self, api, token):
        response = api().post(ENROL, "{not json", content_type="application/json")
        assert response.status_code == 400
        assert not Device.objects.exists()

    def test_it_lets_another_owner_use_the_same_name(self, api, owner, outsider, token,
                                                     device_factory):
        # Names are unique per owner: a name another tenant took is neither revealed nor
        # reserved, and enrolling it leaves the other tenant's device alone.
        theirs = device_factory(outsider, name="jetson-07")
        response = api().post(ENROL, enrol_body(token))
        assert response.status_code == 201
        assert Device.objects.get(pk=response.json()["device_id"]).owner == owner
        assert api(device=theirs.credential).post(HEARTBEAT, {}).status_code == 200

    def test_a_token_holder_cannot_take_over_an_enrolled_device(self, api, owner, token,
                                                                 device_factory):
        victim = device_factory(owner, name="jetson-07")
        response = api().post(ENROL, enrol_body(token, profile="jetson-nx"))
        assert response.status_code == 409
        assert "already enrolled" in response.json()["name"][0]
        assert api(device=victim.credential).post(HEARTBEAT, {}).status_code == 200
        assert Device.objects.get(pk=victim.device.pk).profile_name == victim.device.profile_name

    def test_the_owners_replacement_token_gives_a_device_a_new_credential_once(
            self, api, owner, device_factory):
        old = device_factory(owner, name="jetson-07")
        created = api(owner).post(TOKENS, {"replace_device": str(old.device.id), "ttl_hours": 1})
        assert created.status_code == 201
        assert created.json()["replace_device"] == str(old.device.id)
        replacement = created.json()["token"]
        response = api().post(ENROL, enrol_body(replacement))
        assert response.status_code == 200
        body = response.json()
        assert body["device_id"] == str(old.device.id)
        assert body["credential"] != old.credential
        assert api(device=old.credential).post(HEARTBEAT, {}).status_code == 401
        assert api(device=body["credential"]).post(HEARTBEAT, {}).status_code == 200
        # Used up: replaying it cannot take the device over again.
        again = api().post(ENROL, enrol_body(replacement))
        assert again.status_code == 400 and "token" in again.json()
        assert api(device=body["credential"]).post(HEARTBEAT, {}).status_code == 200
        assert listing(api(owner).get(TOKENS))[0]["status"] == "used"

    def test_a_replacement_token_enrols_no_other_name(self, api, owner, device_factory):
        old = device_factory(owner, name="jetson-07")
        device_factory(owner, name="jetson-08")
        replacement = api(owner).post(TOKENS, {"replace_device": str(old.device.id)}).json()
        for name in ("jetson-08", "brand-new"):
            response = api().post(ENROL, enrol_body(replacement["token"], name=name))
            assert response.status_code == 400
            assert "jetson-07" in response.json()["name"][0]
        assert not Device.objects.filter(name="brand-new").exists()

    def test_it_reenrols_by_credential(self, api, owner, device_factory):
        agent = device_factory(owner, profile="jetson-nx")
        response = api(device=agent.credential).post(
            ENROL, {"profile": "jetson-tx2", "overrides": {"rtt_ms": 3}})
        assert response.status_code == 200
        assert response.json()["device_id"] == str(agent.device.id)
        assert response.json()["credential"] == agent.credential
        agent.device.refresh_from_db()
        assert (agent.device.profile_name, agent.device.rtt_ms) == ("jetson-tx2", 3)
        assert agent.device.compute_gflops == PROFILES["jetson-tx2"].compute_gflops

    def test_it_refuses_a_wrong_credential(self, api):
        response = api(device="made-up").post(ENROL, {})
        assert response.status_code == 401


def test_secrets_pass_on_a_command_line_as_they_are():
    from controlplane.devices.credentials import new_secret

    assert not any(new_secret().startswith("-") for _ in range(2000))
