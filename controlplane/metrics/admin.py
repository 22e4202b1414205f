from django.contrib import admin

from controlplane.metrics.models import MetricPoint, RunLog


@admin.register(MetricPoint)
class MetricPointAdmin(admin.ModelAdmin):
    list_display = ["run", "name", "step", "value", "sim_time_s", "wall_time_s"]
    list_filter = ["name"]
    raw_id_fields = ["run"]


@admin.register(RunLog)
class RunLogAdmin(admin.ModelAdmin):
    list_display = ["run", "created", "line"]
    raw_id_fields = ["run"]
