"""All WebSocket routes (the security test walks this list)."""
from controlplane.metrics.routing import websocket_urlpatterns as metrics_routes

websocket_urlpatterns = [*metrics_routes]
