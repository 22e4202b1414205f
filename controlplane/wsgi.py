"""WSGI entry point (HTTP only; the dashboard's WebSockets need the ASGI application)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

application = get_wsgi_application()
