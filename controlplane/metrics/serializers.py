"""Shapes of metric batches and log lines; every field is checked (finite, bounded)."""
from django.conf import settings
from rest_framework import serializers

from controlplane.fields import FiniteFloatField, StrictSerializer

#: Metric names: the standard ones and per-entity series such as ``waiting_time_s/worker-03``.
METRIC_NAME = r"^[A-Za-z0-9_.:/-]+$"


class PointSerializer(StrictSerializer):
    name = serializers.RegexField(METRIC_NAME, max_length=100, error_messages={
        "invalid": "Letters, digits and _ . : / - only."})
    step = serializers.IntegerField(min_value=0, max_value=2**53)
    value = FiniteFloatField()
    sim_time_s = FiniteFloatField(min_value=0)
    wall_time_s = FiniteFloatField(min_value=0)


class MetricBatchSerializer(StrictSerializer):
    points = serializers.ListField(child=PointSerializer(),
                                   max_length=settings.ESTUARY["MAX_POINTS_PER_BATCH"])


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Points of the batch now stored")
    cancelled = serializers.BooleanField(help_text="The run should stop: its job was "
                                                   "cancelled or failed")


class SeriesQuerySerializer(serializers.Serializer):
    name = serializers.RegexField(METRIC_NAME, max_length=100, required=False)
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
