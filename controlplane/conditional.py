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

from hashlib import md5

from django.http import HttpResponseBase
from django.utils.cache import get_conditional_response, patch_cache_control, set_response_etag
from django.utils.http import quote_etag
from rest_framework.request import Request

#: Envelopes whose ETag a kept body remembers (they differ by host and by query as written).
ETAGS_PER_BODY = 16


class EtagMemo:
    """The ETags of the answers a view builds around one kept body, by their envelope (the
    answer's bytes around that body): each exactly what :class:`ConditionalGetMixin` would set,
    without hashing 100-200 kB again per GET (~0.2-0.3 ms)."""

    def __init__(self) -> None:
        self._etags: dict[bytes, str] = {}

    def etag(self, envelope: bytes, body: bytes) -> str:
        """The ETag of ``body``, the answer whose envelope is ``envelope``."""
        etag = self._etags.get(envelope)
        if etag is None:
            etag = quote_etag(md5(body, usedforsecurity=False).hexdigest())
            if len(self._etags) < ETAGS_PER_BODY:
                self._etags[envelope] = etag
        return etag


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
