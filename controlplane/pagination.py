"""Every list of the API is paginated and filtered the same way.

``GET /api/v1/<things>/?page=2&page_size=100&<filter>=<value>`` answers
``{"count", "next", "previous", "results": [...]}``: ``page_size`` defaults to
:data:`DEFAULT_PAGE_SIZE` and is at most :data:`MAX_PAGE_SIZE`. Query parameters are
validated like bodies: an unknown parameter, an unknown filter value or a bad page size is a
400 naming the parameter (a page past the last one is a 404, as DRF answers).
"""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class Pagination(PageNumberPagination):
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE


class ListQuerySerializer(serializers.Serializer):
    """The query of a list: paging, plus the filters a subclass declares and applies."""

    page = serializers.IntegerField(min_value=1, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, required=False,
                                         help_text=f"Default {DEFAULT_PAGE_SIZE}")

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            known = ", ".join(self.fields)
            raise serializers.ValidationError(
                {key: [f"Unknown query parameter; known: {known}."] for key in unknown})
        return super().to_internal_value(data)

    def apply(self, queryset: QuerySet, filters: dict[str, Any]) -> QuerySet:
        """``queryset`` narrowed by the validated ``filters`` (paging keys excluded); a list
        with paging only (no filters declared) is left as it is."""
        return queryset


class FilteredListMixin(mixins.ListModelMixin):
    """``list`` for a generic view or viewset: validate the query, filter, paginate."""

    pagination_class = Pagination
    #: The view's ListQuerySerializer subclass.
    query_serializer_class: type[ListQuerySerializer]

    def list(self, request: Request, *args, **kwargs) -> Response:
        query = self.list_query(request)
        page = self.paginate_queryset(self.filtered_queryset(query))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def list_query(self, request: Request) -> ListQuerySerializer:
        """The request's query, validated (a 400 naming the parameter otherwise)."""
        query = self.query_serializer_class(data=request.query_params)
        query.is_valid(raise_exception=True)
        return query

    def filtered_queryset(self, query: ListQuerySerializer) -> QuerySet:
        """The view's queryset narrowed by ``query``'s filters."""
        filters = {key: value for key, value in query.validated_data.items()
                   if key not in ("page", "page_size")}
        return query.apply(self.get_queryset(), filters)
