from django.contrib import admin

from controlplane.experiments.models import Experiment, Job, Run


class RunInline(admin.TabularInline):
    model = Run
    fields = ["method", "state", "started_at", "finished_at", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "algorithm", "status", "created"]
    list_filter = ["status", "algorithm"]
    search_fields = ["name", "owner__username"]
    readonly_fields = ["id", "created", "updated", "finished_at"]
    inlines = [RunInline]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "experiment", "method", "state", "started_at", "finished_at"]
    list_filter = ["state", "method"]
    readonly_fields = ["id"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "device", "state", "queued_at", "started_at", "finished_at"]
    list_filter = ["state"]
    readonly_fields = ["id", "celery_task_id", "queued_at"]
