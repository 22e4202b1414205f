"""Device endpoints: owners manage devices and enrolment tokens; agents enrol and heartbeat."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.auth import DeviceCredentialAuthentication, IsDevice, IsOwner
from controlplane.devices import actions, broker
from controlplane.devices.models import Device, offline_cutoff
from controlplane.devices.queries import devices_for, enrolment_tokens_for, with_job_summaries
from controlplane.devices.serializers import (
    DeviceSerializer,
    EnrolmentSerializer,
    EnrolmentTokenRequestSerializer,
    EnrolmentTokenSerializer,
    EnrolSerializer,
    HeartbeatAnswerSerializer,
    HeartbeatSerializer,
    NewEnrolmentTokenSerializer,
    ReenrolSerializer,
)
from controlplane.pagination import FilteredListMixin, ListQuerySerializer
from controlplane.schema import CONFLICT, error_response


class DeviceQuerySerializer(ListQuerySerializer):
    status = serializers.ChoiceField(choices=Device.Status.choices, required=False)
    kind = serializers.ChoiceField(choices=Device.Kind.choices, required=False)
    name = serializers.CharField(max_length=63, required=False,
                                 help_text="Devices whose name contains this (any case)")

    def apply(self, queryset: QuerySet, filters: dict[str, Any]) -> QuerySet:
        if "status" in filters:
            # The same order as Device.status(): offline, degraded, busy, online.
            online = Q(last_seen__gte=offline_cutoff())
            consuming = Q(worker_consuming=True)
            queryset = queryset.filter({
                Device.Status.OFFLINE: ~online | Q(last_seen__isnull=True),
                Device.Status.DEGRADED: online & ~consuming,
                Device.Status.ONLINE: online & consuming & Q(running_jobs=0),
                Device.Status.BUSY: online & consuming & Q(running_jobs__gt=0),
            }[filters["status"]])
        if "kind" in filters:
            queryset = queryset.filter(kind=filters["kind"])
        if "name" in filters:
            queryset = queryset.filter(name__icontains=filters["name"])
        return queryset.order_by("name", "id")


@extend_schema_view(list=extend_schema(parameters=[DeviceQuerySerializer]),
                    destroy=extend_schema(responses={204: None, 409: CONFLICT}))
class DeviceViewSet(FilteredListMixin, mixins.RetrieveModelMixin,
                    mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The user's devices: list, detail, PATCH (name, profile fields), DELETE (409 while busy)."""

    serializer_class = DeviceSerializer
    query_serializer_class = DeviceQuerySerializer
    lookup_value_converter = "uuid"
    permission_classes = [IsOwner]
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        devices = devices_for(self.request.user)
        return with_job_summaries(devices) if self.action in ("list", "retrieve") else devices

    def perform_update(self, serializer: DeviceSerializer) -> None:
        actions.update_device(serializer.instance, serializer.validated_data)

    def perform_destroy(self, instance: Device) -> None:
        actions.delete_device(instance)


class EnrolmentTokenViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The owner's enrolment tokens: create (the secret is shown once), list, revoke."""

    serializer_class = EnrolmentTokenSerializer
    lookup_value_converter = "uuid"
    permission_classes = [IsOwner]

    def get_queryset(self):
        return enrolment_tokens_for(self.request.user)

    @extend_schema(request=EnrolmentTokenRequestSerializer,
                   responses={201: NewEnrolmentTokenSerializer})
    def create(self, request: Request) -> Response:
        body = EnrolmentTokenRequestSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        token, secret = actions.create_enrolment_token(
            request.user, body.validated_data["ttl_hours"], note=body.validated_data["note"],
            replaces=body.validated_data["replace_device"])
        token.token = secret
        return Response(NewEnrolmentTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=EnrolmentTokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk=None) -> Response:
        """No agent can enrol with the token from now on; devices it enrolled stay."""
        token = actions.revoke_enrolment_token(self.get_object())
        return Response(EnrolmentTokenSerializer(token).data)


def _enrolment(device: Device, credential: str) -> dict:
    broker_url = broker.device_broker_url(settings.ESTUARY["PUBLIC_BROKER_URL"], device.id,
                                          credential)
    return {"device_id": device.id, "credential": credential,
            "broker_url": broker_url, "queue": device.queue,
            "heartbeat_interval_s": settings.ESTUARY["HEARTBEAT_INTERVAL_S"]}


class EnrolView(APIView):
    """An agent exchanges an enrolment token for its credential (201), or, presenting its
    credential, re-enrols (200, same device and credential, profile refreshed if given)."""

    authentication_classes = [DeviceCredentialAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(request=EnrolSerializer,
                   responses={201: EnrolmentSerializer, 200: EnrolmentSerializer,
                              409: error_response("The name belongs to an enrolled device: "
                                                  "only its replacement token re-enrols it.")})
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, Device):
            body = ReenrolSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            device = actions.reenrol_device(request.auth, body.validated_data.get("profile"),
                                            body.validated_data["overrides"],
                                            body.validated_data.get("advertise_address"))
            credential = DeviceCredentialAuthentication.credential_of(request)
            return Response(EnrolmentSerializer(_enrolment(device, credential)).data)
        body = EnrolSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        enrolment = actions.enrol_device(
            body.validated_data["token"], body.validated_data["name"],
            body.validated_data["profile"], body.validated_data["overrides"],
            body.validated_data.get("advertise_address"))
        return Response(EnrolmentSerializer(_enrolment(enrolment.device,
                                                       enrolment.credential)).data,
                        status=status.HTTP_201_CREATED if enrolment.created else status.HTTP_200_OK)


class HeartbeatView(APIView):
    """The agent is alive; the answer lists the jobs it reported that it must stop."""

    permission_classes = [IsDevice]

    @extend_schema(request=HeartbeatSerializer, responses=HeartbeatAnswerSerializer)
    def post(self, request: Request) -> Response:
        body = HeartbeatSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        cancel = actions.record_heartbeat(request.auth, body.validated_data["running_jobs"],
                                          body.validated_data.get("worker"),
                                          body.validated_data.get("advertise_address"),
                                          body.validated_data.get("resources"))
        return Response({"cancel_jobs": [str(job_id) for job_id in cancel]})
