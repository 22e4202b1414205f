"""API errors the action functions raise besides field validation errors (400)."""
from rest_framework import status
from rest_framework.exceptions import APIException


class Conflict(APIException):
    """The object is not in a state that allows this (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object's state does not allow this."
    default_code = "conflict"
