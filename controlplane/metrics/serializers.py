"""Shapes of metric batches and log lines; every field is checked (finite, bounded).

The rules are ml.wire's, which agents and ``python -m ml run`` check with too.
"""
from django.conf import settings
from rest_framework import serializers

from controlplane.fields import FiniteFloatField, StrictSerializer
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


class MetricBatchSerializer(StrictSerializer):
    points = serializers.ListField(child=PointSerializer(),
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


class SeriesSerializer(serializers.Serializer):
    run = serializers.UUIDField()
    points = PointSerializer(many=True)


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
