"""Password guessing is refused: the AXES_FAILURE_LIMIT-th failed login for one username from one
address, and every login of that pair after it, gets a 429 on the token endpoint and the login
page, even with the right password, while other users and other addresses log in as usual."""
from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from controlplane.login import client_ip
from tests.fixtures.servers import PASSWORD

TOKEN_URL = "/api/v1/auth/token/"


@pytest.fixture
def limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    return 3


def token(username: str, password: str, address: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post(
        TOKEN_URL, {"username": username, "password": password}, format="json")


@pytest.mark.django_db
def test_the_token_endpoint_locks_a_username_out_of_an_address_after_the_limit(
        limit, owner, outsider):
    for _ in range(limit - 1):
        refused = token(owner.username, "guess")
        assert refused.status_code == 400
        assert "non_field_errors" in refused.json()
    assert token(owner.username, "guess").status_code == 429  # the limit-th failure locks
    locked = token(owner.username, PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.json()["detail"]
    assert int(locked["Retry-After"]) == 15 * 60
    # another user from that address, and the same user from elsewhere, are not affected
    assert token(outsider.username, PASSWORD).json()["token"] == outsider.api_token
    assert token(owner.username, PASSWORD, "10.0.0.2").json()["token"] == owner.api_token


@pytest.mark.django_db
def test_a_successful_login_resets_the_count(limit, owner):
    for _ in range(limit - 1):
        assert token(owner.username, "guess").status_code == 400
    assert token(owner.username, PASSWORD).status_code == 200
    for _ in range(limit - 1):
        assert token(owner.username, "guess").status_code == 400
    assert token(owner.username, PASSWORD).status_code == 200


@pytest.mark.django_db
def test_the_login_page_answers_a_lockout_with_429(limit, owner):
    client = Client(REMOTE_ADDR="10.0.0.3")
    for _ in range(limit - 1):
        page = client.post("/accounts/login/", {"username": owner.username, "password": "x"})
        assert page.status_code == 200  # the form again, with its error
    assert client.post("/accounts/login/", {"username": owner.username,
                                            "password": "x"}).status_code == 429
    locked = client.post("/accounts/login/", {"username": owner.username,
                                              "password": PASSWORD})
    assert locked.status_code == 429
    assert not locked.wsgi_request.user.is_authenticated


@pytest.mark.django_db
def test_behind_a_proxy_the_address_is_the_last_forwarded_hop(settings, rf, limit, owner):
    request = rf.post("/", REMOTE_ADDR="172.18.0.5",
                      HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    assert client_ip(request) == "172.18.0.5"
    settings.BEHIND_PROXY = True
    assert client_ip(request) == "203.0.113.7"
    # so users behind one proxy are told apart by the address the proxy saw
    for _ in range(limit):
        APIClient(REMOTE_ADDR="172.18.0.5", HTTP_X_FORWARDED_FOR="203.0.113.7").post(
            TOKEN_URL, {"username": owner.username, "password": "guess"}, format="json")
    other = APIClient(REMOTE_ADDR="172.18.0.5", HTTP_X_FORWARDED_FOR="198.51.100.9").post(
        TOKEN_URL, {"username": owner.username, "password": PASSWORD}, format="json")
    assert other.status_code == 200
