"""Serializer building blocks shared by the apps: strict input and finite numbers."""
from __future__ import annotations

import json
import math

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


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not know (a typo is an error, not silently ignored)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class StrictModelSerializer(serializers.ModelSerializer):
    """ModelSerializer that rejects unknown and read-only keys in the input."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError(
                    {key: ["Unknown or read-only field."] for key in unknown})
        return super().to_internal_value(data)


class JSONObjectField(serializers.DictField):
    """A JSON object of bounded size whose strings hold no NUL (PostgreSQL cannot store it)."""

    default_error_messages = {
        "too_large": "Must encode to at most {max_bytes} bytes of JSON.",
        "nul": "Must not contain NUL characters.",
    }

    def __init__(self, *, max_bytes: int = 1_000_000, **kwargs):
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        encoded = json.dumps(value)
        if len(encoded) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        if _has_nul(value):
            self.fail("nul")
        return value


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False
