"""WebSocket routes of the metrics app."""
from django.urls import path

from controlplane.metrics.consumers import ExperimentConsumer

websocket_urlpatterns = [
    path("ws/experiments/<uuid:experiment_id>/", ExperimentConsumer.as_asgi(),
         name="ws-experiment"),
]
