"""ASGI entry point: Django for HTTP, Channels for the live WebSockets.

    daphne controlplane.asgi:application
"""
import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
# Django must be set up before the routes import models (as get_asgi_application() does).
django.setup(set_prefix=False)

from controlplane.asgi_http import SyncChainASGIHandler  # noqa: E402

django_asgi_app = SyncChainASGIHandler()

from ml.registry import load_all  # noqa: E402

# Import every algorithm (and torch) now, so the first catalogue request is not the slow one.
load_all()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from controlplane.devices.uptime import marks_uptime  # noqa: E402
from controlplane.routing import websocket_urlpatterns  # noqa: E402
from controlplane.wsauth import websocket_auth_stack  # noqa: E402

# The reaper counts agents' silence only while a server accepts heartbeats: mark it.
application = marks_uptime(ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": websocket_auth_stack(URLRouter(websocket_urlpatterns)),
}))

# Everything loaded so far (Django, torch and the catalogue: ~400,000 objects) lives as long as
# the process: out of the collector's reach, a full collection no longer walks it. Each one did,
# stopping the whole server for about a second under load, every few dozen list GETs (issue #20).
gc.collect()
gc.freeze()
