"""Conditional GET for API reads the dashboard polls (issue #20).

A read answers with an ``ETag`` (a hash of the exact body it rendered) and ``Cache-Control:
private, no-cache``: a browser keeps the body and revalidates on every poll, sending
``If-None-Match``; an unchanged body is then answered ``304 Not Modified`` with no body. The
body is always computed afresh, so a 304 is never stale: any change, including one that only
time makes (a device going offline changes a queue reason; a running experiment's duration),
changes the hash. It saves the transfer and the client's parsing, not the server's work. A view
whose body cannot change while the process lives (the method catalogue) may keep the body and
its hash and set the ETag itself; it must be the hash this module would compute.
"""
from __future__ import annotations

from django.http import HttpResponseBase
from django.utils.cache import get_conditional_response, patch_cache_control, set_response_etag
from rest_framework.request import Request


class ConditionalGetMixin:
    """For a DRF view: successful GET and HEAD answers carry an ETag and may be a 304."""

    def finalize_response(self, request: Request, response: HttpResponseBase, *args,
                          **kwargs) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)
        if (request.method not in ("GET", "HEAD") or response.status_code != 200
                or response.streaming):
            return response
        if hasattr(response, "render"):
            response.render()
        if "ETag" not in response:  # else set by a view that keeps its body and its hash
            set_response_etag(response)
        # private: bodies are per user; no-cache: keep it, but ask every time.
        patch_cache_control(response, private=True, no_cache=True)
        return get_conditional_response(request, etag=response.headers["ETag"],
                                        response=response)
