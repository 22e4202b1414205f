"""Estuary's control plane: the Django project (settings, URLs, ASGI, Celery app, checks)."""
from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
