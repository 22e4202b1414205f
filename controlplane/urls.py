"""URLs: the REST API under /api/v1/, its schema, the admin and the dashboard at the root.

Login and logout pages (/accounts/login/, /accounts/logout/) are the dashboard's
(frontend.urls), so they share its templates.
"""
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from controlplane.devices.views import (
    DeviceViewSet,
    EnrolmentTokenViewSet,
    EnrolView,
    HeartbeatView,
)
from controlplane.experiments.catalogue import AlgorithmDetailView, AlgorithmListView
from controlplane.experiments.views import (
    ExperimentViewSet,
    JobFinishView,
    JobRendezvousView,
    JobStartView,
    RunViewSet,
)
from controlplane.login import TokenView
from controlplane.metrics.views import RunLogsView, RunMetricsView

router = SimpleRouter(use_regex_path=False)
router.register("devices", DeviceViewSet, basename="device")
router.register("enrolment-tokens", EnrolmentTokenViewSet, basename="enrolment-token")
router.register("experiments", ExperimentViewSet, basename="experiment")
router.register("runs", RunViewSet, basename="run")

api = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("algorithms/", AlgorithmListView.as_view(), name="algorithm-list"),
    path("algorithms/<str:name>/", AlgorithmDetailView.as_view(), name="algorithm-detail"),
    path("agents/enrol/", EnrolView.as_view(), name="agent-enrol"),
    path("agents/heartbeat/", HeartbeatView.as_view(), name="agent-heartbeat"),
    path("agents/jobs/<uuid:job_id>/start/", JobStartView.as_view(), name="agent-job-start"),
    path("agents/jobs/<uuid:job_id>/finish/", JobFinishView.as_view(), name="agent-job-finish"),
    path("agents/jobs/<uuid:job_id>/rendezvous/", JobRendezvousView.as_view(),
         name="agent-job-rendezvous"),
    path("runs/<uuid:run_id>/metrics/", RunMetricsView.as_view(), name="run-metrics"),
    path("runs/<uuid:run_id>/logs/", RunLogsView.as_view(), name="run-logs"),
    *router.urls,
]

urlpatterns = [
    path("api/v1/", include(api)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]
