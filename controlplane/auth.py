"""Authentication and permissions of the REST API.

Users authenticate with ``Authorization: Token <key>`` (scripts) or the session cookie
(browser). Agents authenticate with ``Authorization: Device <credential>``: the request then
carries the Device in ``request.auth`` and an *anonymous* ``request.user``, so a device
credential never passes a user permission (``IsAuthenticated``) and a user never passes
``IsDevice``. Objects of other owners are hidden by the scoping helpers (404); ``IsOwner`` is
the object-level backstop.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.authtoken.models import Token

from controlplane.devices.models import Device
from controlplane.devices.queries import device_by_credential

DEVICE_KEYWORD = "Device"


class UserTokenAuthentication(authentication.TokenAuthentication):
    """DRF's ``Authorization: Token <key>``, its user read with one raw SQL join: the ORM took
    longer to build the query than the database to answer it, on every API call of a script
    or a polling dashboard (issue #20). The same answers and errors as DRF's."""

    def authenticate_credentials(self, key: str):
        user_model = get_user_model()
        users = list(user_model.objects.raw(
            f"SELECT u.* FROM {user_model._meta.db_table} u JOIN {Token._meta.db_table} t "
            f"ON t.user_id = u.{user_model._meta.pk.column} WHERE t.key = %s", [key]))
        if not users:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not users[0].is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return users[0], Token(key=key, user=users[0])


class DeviceCredentialAuthentication(authentication.BaseAuthentication):
    """``Authorization: Device <credential>`` → (AnonymousUser, Device)."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace") != DEVICE_KEYWORD:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Device header: expected 'Device <credential>'.")
        try:
            credential = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid device credential.") from None
        device = device_by_credential(credential)
        if device is None:
            raise exceptions.AuthenticationFailed("Invalid device credential.")
        return AnonymousUser(), device

    @staticmethod
    def credential_of(request) -> str:
        """The credential a request authenticated with (for echoing it back at re-enrolment)."""
        return authentication.get_authorization_header(request).split()[1].decode()

    def authenticate_header(self, request) -> str:
        return DEVICE_KEYWORD


class DeviceCredentialScheme(OpenApiAuthenticationExtension):
    """Describes the Device scheme in the OpenAPI schema."""

    target_class = "controlplane.auth.DeviceCredentialAuthentication"
    name = "deviceCredential"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Device <credential>`, issued to an agent at enrolment"}


class IsDevice(permissions.BasePermission):
    """The request carries a valid device credential."""

    message = "This endpoint is for agents: authenticate with 'Device <credential>'."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Device)


class IsOwner(permissions.BasePermission):
    """An authenticated user who owns the object (directly or through its experiment)."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request, view, obj) -> bool:
        owner_id = getattr(obj, "owner_id", None)
        if owner_id is None and hasattr(obj, "experiment"):
            owner_id = obj.experiment.owner_id
        return owner_id is not None and owner_id == request.user.pk
