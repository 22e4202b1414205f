from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "controlplane.devices"
    label = "devices"
    verbose_name = "Devices"
