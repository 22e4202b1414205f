"""Password logins: the API's token endpoint and the guard against password guessing.

django-axes counts failed logins per (username, address) in the database, for the login page,
the admin and the token endpoint alike (settings: ``AXES_*``). Its middleware answers a lockout
on Django's own views; DRF views get their own request object, so :class:`TokenView` answers it.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.http import HttpRequest
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.response import Response
from rest_framework.parsers import FormParser

from controlplane.fields import StrictSerializer
from controlplane.parsers import BoundedJSONParser
from controlplane.schema import error_response


class TokenRequestSerializer(StrictSerializer, AuthTokenSerializer):
    """DRF's username and password, typed strictly (``123`` is not a username)."""


class TokenView(ObtainAuthToken):
    """``POST {"username", "password"}`` → ``{"token"}``, the user's API token.

    A username that failed ``AXES_FAILURE_LIMIT`` times from one address is refused from that
    address for ``AXES_COOLOFF_TIME`` with a 429, even with the right password.
    """

    # ObtainAuthToken names its own parsers (form, multipart, plain JSON): the API's bounded
    # JSON, and forms (flat, nothing to nest) for `curl -d username=... -d password=...`.
    parser_classes = [BoundedJSONParser, FormParser]
    serializer_class = TokenRequestSerializer

    @extend_schema(request=TokenRequestSerializer, responses={
        200: inline_serializer("Token", {"token": serializers.CharField()}),
        429: error_response("Too many failed logins for this username from this address.")})
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except exceptions.ValidationError:
            if getattr(request, "axes_locked_out", False):
                raise exceptions.Throttled(
                    wait=settings.AXES_COOLOFF_TIME.total_seconds(),
                    detail="Too many failed logins for this username from this address; try "
                           "again later.") from None
            raise
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        # A token exchange is a login: the signal resets the failure count (AXES_RESET_ON_SUCCESS)
        # and records last_login, as the login page does.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        return Response({"token": token.key})


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address for counting failed logins: the last ``X-Forwarded-For`` hop when
    ``ESTUARY_BEHIND_PROXY`` (the one our proxy appended), else the socket's peer."""
    meta = getattr(request, "META", {})
    if settings.BEHIND_PROXY and meta.get("HTTP_X_FORWARDED_FOR"):
        return meta["HTTP_X_FORWARDED_FOR"].split(",")[-1].strip()
    return meta.get("REMOTE_ADDR")
