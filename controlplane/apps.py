from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    """The project itself as an app, so its system checks register at start-up."""

    name = "controlplane"
    verbose_name = "Estuary control plane"

    def ready(self) -> None:
        from controlplane import checks  # noqa: F401  (registers the checks)
