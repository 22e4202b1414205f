"""Shapes of metric batches and log lines; every field is checked (finite, bounded).

The rules are ml.wire's, which agents and ``python -m ml run`` check with too.
"""
from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from rest_framework import serializers

from controlplane.fields import FiniteFloatField, StrictSerializer
from controlplane.metrics.downsample import MAX_BUCKETS
from ml import wire


def validate_metric_name(name: str) -> str:
    try:
        return wire.check_metric_name(name)
    except wire.WireError as exc:
        raise serializers.ValidationError(exc.message) from None


class PointSerializer(StrictSerializer):
    name = serializers.CharField(max_length=wire.MAX_METRIC_NAME_CHARS, trim_whitespace=False,
                                 validators=[validate_metric_name])
    step = serializers.IntegerField(min_value=0, max_value=wire.MAX_STEP)
    value = FiniteFloatField()
    sim_time_s = FiniteFloatField(min_value=0)
    wall_time_s = FiniteFloatField(min_value=0)

    def validate(self, attrs: dict) -> dict:
        try:  # the fields above already hold; this keeps the server and ml.wire one rule
            return wire.check_point(**attrs)
        except wire.WireError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from None


POINT_FIELDS = ("name", "step", "value", "sim_time_s", "wall_time_s")
_NUMBER_FIELDS = POINT_FIELDS[2:]


def point_errors(item: Any) -> dict[str, list[str]] | None:
    """What :class:`PointSerializer` would say about ``item``, or None if it is a valid point.

    The same rules and messages (ml.wire's), checked in plain Python: a DRF serializer per
    point cost more than the rest of ingestion together (issue #20's profile).
    """
    if not isinstance(item, dict):
        return {"non_field_errors": [
            f"Invalid data. Expected a dictionary, but got {type(item).__name__}."]}
    errors: dict[str, list[str]] = {}
    if len(item) != len(POINT_FIELDS) or any(key not in item for key in POINT_FIELDS):
        errors.update({key: ["Unknown field."] for key in item if key not in POINT_FIELDS})
        errors.update({key: ["This field is required."] for key in POINT_FIELDS
                       if key not in item})
    if type(item.get("name", "")) is not str:
        errors["name"] = ["Must be a string."]
    if "step" in item and type(item["step"]) is not int:  # a bool or 1.0 is not a step
        errors["step"] = ["Must be an integer."]
    for key in _NUMBER_FIELDS:
        if key in item and type(item[key]) not in (int, float):  # bool is neither
            errors[key] = ["Must be a number."]
    if errors:
        return errors
    try:
        wire.check_point(**item)
    except wire.WireError as exc:
        return {exc.field: [exc.message]}
    return None


def _plainly_valid(item: Any, names: set[str]) -> bool:
    """The common case, cheaply: a point of exactly the five fields, of the right JSON types,
    in range, whose name is one ``names`` holds (already checked in this batch). Integers
    take the slow path (a JSON integer may be too large for a float)."""
    try:
        if len(item) != 5 or item["name"] not in names:
            return False
        step, value, sim, wall = item["step"], item["value"], item["sim_time_s"], item["wall_time_s"]
    except (TypeError, KeyError):
        return False
    return (type(step) is int and 0 <= step <= wire.MAX_STEP
            and type(value) is float and -math.inf < value < math.inf
            and type(sim) is float and 0 <= sim < math.inf
            and type(wall) is float and 0 <= wall < math.inf)


class PointListField(serializers.ListField):
    """A list of points, checked by :func:`point_errors` instead of a serializer per point;
    errors are keyed by the point's index, as ListField keys them."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        names: set[str] = set()
        errors = {}
        for index, item in enumerate(data):
            if _plainly_valid(item, names):
                continue
            error = point_errors(item)
            if error is None:
                names.add(item["name"])
            else:
                errors[index] = error
        if errors:
            raise serializers.ValidationError(errors)
        # Valid points hold exactly the five fields: floats as floats, as the columns store them.
        return [{"name": p["name"], "step": p["step"], "value": float(p["value"]),
                 "sim_time_s": float(p["sim_time_s"]), "wall_time_s": float(p["wall_time_s"])}
                for p in data]


class MetricBatchSerializer(StrictSerializer):
    points = PointListField(child=PointSerializer(),
                            max_length=settings.ESTUARY["MAX_POINTS_PER_BATCH"])


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Points of the batch now stored")
    cancelled = serializers.BooleanField(help_text="The run should stop: its job was "
                                                   "cancelled or failed")


class SeriesQuerySerializer(serializers.Serializer):
    name = serializers.CharField(max_length=wire.MAX_METRIC_NAME_CHARS, required=False,
                                 validators=[validate_metric_name])
    since_step = serializers.IntegerField(min_value=0, required=False,
                                          help_text="Only points with step > since_step")
    from_step = serializers.IntegerField(min_value=0, max_value=wire.MAX_STEP, required=False,
                                         help_text="Only points with step >= from_step")
    to_step = serializers.IntegerField(min_value=0, max_value=wire.MAX_STEP, required=False,
                                       help_text="Only points with step <= to_step")
    buckets = serializers.IntegerField(
        min_value=1, max_value=MAX_BUCKETS, required=False,
        help_text="Downsample each series with more than 2 x buckets points in the range to the "
                  "min and max point of each of `buckets` equal step buckets, plus its first "
                  "and last point (the WebSocket history's rule); absent: full resolution")

    def validate(self, attrs: dict) -> dict:
        if attrs.get("from_step", 0) > attrs.get("to_step", wire.MAX_STEP):
            raise serializers.ValidationError({"to_step": ["Must be >= from_step."]})
        return attrs


class SeriesSerializer(serializers.Serializer):
    run = serializers.UUIDField()
    points = PointSerializer(many=True)
    downsampled = serializers.ListField(
        child=serializers.CharField(), help_text="Names of the series that were downsampled")


class LogBatchSerializer(StrictSerializer):
    """Consecutive lines of a run's log: ``lines[i]`` is line number ``first_seq + i``."""

    first_seq = serializers.IntegerField(min_value=0, max_value=2**53,
                                         help_text="The agent's number of the first line")
    lines = serializers.ListField(
        child=serializers.CharField(max_length=settings.ESTUARY["MAX_LOG_LINE_CHARS"],
                                    allow_blank=True, trim_whitespace=False),
        max_length=settings.ESTUARY["MAX_LOG_LINES_PER_BATCH"])


class LogQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, required=False,
                                     help_text="Only lines with id > after")


class LogLineSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    line = serializers.CharField()
    created = serializers.DateTimeField()


class LogsSerializer(serializers.Serializer):
    run = serializers.UUIDField()
    lines = LogLineSerializer(many=True)
