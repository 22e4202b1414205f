"""Serializer building blocks shared by the apps: strict input and finite numbers."""
from __future__ import annotations

import json
import math
from typing import Any

from django.db import models
from rest_framework import serializers


class FiniteFloatField(serializers.FloatField):
    """A float that is finite (no NaN or infinity), not a boolean, optionally > 0."""

    default_error_messages = {
        "not_finite": "Must be a finite number.",
        "not_positive": "Must be greater than 0.",
    }

    def __init__(self, *, positive: bool = False, **kwargs):
        self.positive = positive
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, float) and not math.isfinite(data):
            self.fail("not_finite")
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("not_finite")
        if self.positive and value <= 0:
            self.fail("not_positive")
        return value


def json_type_error(field: serializers.Field, value: Any) -> Any:
    """Why ``value`` (as JSON decoded it) is the wrong JSON type for ``field``, or None.

    DRF converts freely (``true`` to 1, ``123`` to "123", ``"0.5"`` to 0.5); a client that
    sends the wrong type has a bug we would rather name than guess around. Lists and objects
    are checked item by item, keyed by index or key as DRF keys their errors.
    """
    if value is None:
        return None  # allow_null decides, with DRF's own message
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else ["Must be true or false."]
    if isinstance(field, serializers.IntegerField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else ["Must be an integer."]
    if isinstance(field, (serializers.FloatField, serializers.DecimalField)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else ["Must be a number."]
    if isinstance(field, (serializers.CharField, serializers.UUIDField,
                          serializers.DateTimeField, serializers.DateField)):
        return None if isinstance(value, str) else ["Must be a string."]
    if isinstance(field, serializers.ChoiceField) and all(
            isinstance(choice, str) for choice in field.choices):
        return None if isinstance(value, str) else ["Must be a string."]
    if isinstance(field, serializers.ListField) and isinstance(field.child,
                                                            serializers.BaseSerializer):
        return None  # items are nested serializers: they check their own fields
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        errors = {str(i): error for i, item in enumerate(value)
                  if (error := json_type_error(field.child, item)) is not None}
        return errors or None
    if isinstance(field, serializers.DictField) and isinstance(value, dict):
        errors = {str(key): error for key, item in value.items()
                  if (error := json_type_error(field.child, item)) is not None}
        return errors or None
    return None  # nested serializers check their own fields; other fields validate as DRF does


def _check_input(serializer: serializers.Serializer, data: Any, writable: set[str],
                 unknown_message: str) -> None:
    if not isinstance(data, dict):
        return  # DRF answers "Invalid data. Expected a dictionary"
    errors: dict[str, Any] = {key: [unknown_message] for key in sorted(set(data) - writable)}
    for name in writable & set(data):
        error = json_type_error(serializer.fields[name], data[name])
        if error is not None:
            errors[name] = error
    if errors:
        raise serializers.ValidationError(errors)


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not know (a typo is an error, not silently ignored) and values of
    the wrong JSON type (``true`` is not an integer, ``"0.5"`` not a number, ``123`` not a
    string)."""

    def to_internal_value(self, data):
        _check_input(self, data, set(self.fields), "Unknown field.")
        return super().to_internal_value(data)


class StrictModelSerializer(serializers.ModelSerializer):
    """ModelSerializer that rejects unknown and read-only keys, and wrong JSON types."""

    def to_internal_value(self, data):
        writable = {name for name, field in self.fields.items() if not field.read_only}
        _check_input(self, data, writable, "Unknown or read-only field.")
        return super().to_internal_value(data)


class ResponseDateTimeField(serializers.DateTimeField):
    """A DateTimeField that reads the active time zone once per field, i.e. once per response
    (fields are built per serializer): read per value, its asgiref lookup was a third of the
    experiment list's CPU under daphne (issue #20)."""

    def default_timezone(self):
        try:
            return self._zone
        except AttributeError:
            self._zone = super().default_timezone()
            return self._zone


#: ``serializer_field_mapping`` of ModelSerializers of large read-only responses: model
#: datetimes become :class:`ResponseDateTimeField` (same output and schema).
RESPONSE_FIELD_MAPPING = {**serializers.ModelSerializer.serializer_field_mapping,
                          models.DateTimeField: ResponseDateTimeField}


class JSONObjectField(serializers.DictField):
    """A JSON object of bounded size whose strings hold no NUL (PostgreSQL cannot store it)."""

    default_error_messages = {
        "too_large": "Must encode to at most {max_bytes} bytes of JSON.",
        "nul": "Must not contain NUL characters.",
        "not_finite": "Numbers must be finite.",
    }

    def __init__(self, *, max_bytes: int = 1_000_000, **kwargs):
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:  # the parser refuses NaN and infinity already; no database column takes them
            encoded = json.dumps(value, allow_nan=False)
        except ValueError:
            self.fail("not_finite")
        if len(encoded) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        if _has_nul(value):
            self.fail("nul")
        return value


def _has_nul(value) -> bool:
    """True if a string anywhere in ``value`` holds NUL; iterative, so depth cannot crash it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
