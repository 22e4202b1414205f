from django.contrib import admin

from controlplane.devices.models import Device, EnrolmentToken


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "kind", "profile_name", "last_seen", "created"]
    list_filter = ["kind", "profile_name"]
    search_fields = ["name", "owner__username"]
    readonly_fields = ["id", "last_seen", "created"]


@admin.register(EnrolmentToken)
class EnrolmentTokenAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "expires_at", "created"]
    readonly_fields = ["id", "created"]
