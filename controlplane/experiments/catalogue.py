"""``GET /api/v1/algorithms/``: the methods an experiment can run, from ``ml.registry``.

The catalogue is fixed for the life of a process: its entries are ``Method.describe()``, built
from the registered methods' classes alone (config schemas and defaults, the static metrics
catalogue), with nothing read from the database, the clock or the request. Describing,
serializing and rendering it cost ~87 ms of CPU per GET and the answer is ~200 kB (issue #20),
so a process describes it once and keeps each page's rendered ``results`` (the page's offsets in
the list are all they depend on). What does depend on the request is built per GET, as DRF
builds it: the query's validation (a 400 naming the parameter), the page number (a 404 past
the last), and the envelope's ``next`` and ``previous`` links (absolute URLs: the request's host
and its query as written). A method registered or removed later (tests do) makes a new snapshot.
The bytes and headers are those of the uncached answer (tests compare them). Answers carry an
ETag and ``Cache-Control: private, no-cache`` (controlplane.conditional), so the dashboard's
launch form revalidates with a 304; each page keeps the hash of the answers it served, not to
hash 200 kB per GET again. A GET kept rendered costs ~2 ms of CPU, most of it the token's
lookup; an ``Accept: application/json; indent=N`` is rendered afresh each time.
"""
from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from django.http import Http404, HttpResponse
from django.utils.functional import cached_property
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.conditional import ConditionalGetMixin, EtagMemo
from controlplane.experiments.reads import KeptPages
from controlplane.pagination import FilteredListMixin, ListQuerySerializer
from ml import registry

#: Rendered pages kept per process (least recently used first out). Every page_size from 1 to
#: 500 over the whole list is ~500 times the catalogue; the dashboard asks for one or two.
CACHE_BYTES = 8 * 2**20

_renderer = JSONRenderer()


class AlgorithmSerializer(serializers.Serializer):
    """``Method.describe()``: what the new-experiment form is built from."""

    name = serializers.CharField()
    family = serializers.CharField()
    paper = serializers.CharField()
    summary = serializers.CharField()
    baselines = serializers.ListField(child=serializers.CharField())
    metrics = serializers.ListField(child=serializers.CharField())
    metric_info = serializers.DictField(
        child=serializers.DictField(), help_text=(
            "Per metric: label, unit (fraction, bytes, s, ms, count, flops, bytes/token, "
            "tokens or empty), description, higher_is_better (ml/metrics_catalogue.py)"))
    defaults = serializers.DictField()
    schema = serializers.DictField(help_text="JSON schema of the method's config")
    distributed = serializers.BooleanField(
        help_text="Whether its roles run on several devices with execution 'distributed'")
    single_device = serializers.BooleanField(
        help_text="A method without roles: with execution 'distributed' it runs whole on one "
                  "device (host, else the first listed)")


@dataclass
class KeptPage:
    """A page's ``results`` as rendered JSON, and the ETags of answers served with it."""

    results: bytes
    etags: EtagMemo = field(default_factory=EtagMemo)

    @property
    def size(self) -> int:
        return len(self.results)


@dataclass
class Snapshot:
    """The catalogue of one set of registered methods, described, with its rendered pages."""

    methods: tuple[registry.Method, ...]
    entries: list[dict[str, Any]]
    by_name: dict[str, dict[str, Any]]
    #: (filters, first, last offsets in ``entries``) of a page -> its ``results`` as JSON.
    pages: KeptPages = field(default_factory=lambda: KeptPages(CACHE_BYTES))

    def describes(self, methods: list[registry.Method]) -> bool:
        """Whether it was built from exactly these method objects (identity, not equality)."""
        return len(methods) == len(self.methods) and all(
            new is old for new, old in zip(methods, self.methods))


class CatalogueCache:
    """A process's snapshot of the catalogue, replaced when the registered methods change. Safe
    across threads (a page rendered twice at once is kept once: the later)."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        """The catalogue of the methods registered now."""
        methods = registry.all_methods()
        snapshot = self._snapshot
        if snapshot is not None and snapshot.describes(methods):
            return snapshot
        entries = [method.describe() for method in methods]
        snapshot = Snapshot(tuple(methods), entries, {e["name"]: e for e in entries})
        with self._lock:
            self._snapshot = snapshot
        return snapshot

    def page(self, snapshot: Snapshot, key: Hashable) -> KeptPage | None:
        return snapshot.pages.get(key)

    def put(self, snapshot: Snapshot, key: Hashable, results: bytes) -> KeptPage:
        """``results`` kept as page ``key``."""
        page = KeptPage(results)
        snapshot.pages.put(key, page)
        return page

    def clear(self) -> None:
        with self._lock:
            self._snapshot = None


#: The process's catalogue, shared by the list and the detail views.
catalogue = CatalogueCache()


class AlgorithmListView(ConditionalGetMixin, FilteredListMixin, GenericAPIView):
    """The catalogue, by name, paginated like every list."""

    serializer_class = AlgorithmSerializer
    query_serializer_class = ListQuerySerializer

    @cached_property
    def snapshot(self) -> Snapshot:
        """This request's catalogue (one for the whole request, even if methods are added)."""
        return catalogue.snapshot()

    def get_queryset(self) -> list[dict]:
        return self.snapshot.entries

    @extend_schema(parameters=[ListQuerySerializer])
    def get(self, request: Request) -> Response:
        return self.list(request)

    def list(self, request: Request, *args, **kwargs) -> HttpResponse | Response:
        if _renderer.get_indent(request.accepted_media_type, {}) is not None:
            return super().list(request)  # Accept: ...; indent=n: rare, rendered differently
        query = self.list_query(request)  # the 400s, as the uncached list
        items = self.paginate_queryset(self.filtered_queryset(query))  # the 404s
        page = self.paginator.page
        filters = sorted((key, value) for key, value in query.validated_data.items()
                         if key not in ("page", "page_size"))
        key = (tuple(filters), page.start_index(), page.end_index())
        kept = catalogue.page(self.snapshot, key)
        if kept is None:
            kept = catalogue.put(self.snapshot, key, _renderer.render(
                self.get_serializer(items, many=True).data))
        # get_paginated_response's envelope, per request; the results spliced in as rendered.
        envelope = _renderer.render({"count": page.paginator.count,
                                     "next": self.paginator.get_next_link(),
                                     "previous": self.paginator.get_previous_link()})
        body = envelope[:-1] + b',"results":' + kept.results + b"}"
        response = HttpResponse(body, content_type=_renderer.media_type)
        response["ETag"] = kept.etags.etag(envelope, body)
        return response


# Without ConditionalGetMixin: its docstring would become this view's description in the schema.
class AlgorithmDetailView(APIView):
    @extend_schema(responses=AlgorithmSerializer)
    def get(self, request: Request, name: str) -> Response:
        entry = catalogue.snapshot().by_name.get(name)
        if entry is None:
            raise Http404(f"No algorithm named {name!r}.")
        return Response(entry)
