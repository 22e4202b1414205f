"""Django's HTTP handling under ASGI, with the middleware chain and the view run in one switch
to the request's thread.

Django's own ASGI handler builds an async middleware chain: each sync-capable middleware built on
``MiddlewareMixin`` then runs its ``process_request`` and ``process_response`` through
``sync_to_async``, and WhiteNoise (sync only) switches back with ``async_to_sync``, so a request
crossed between the event loop and its thread about sixteen times. Each crossing wakes the other
thread and waits for the GIL: on a busy machine that was the largest cost of a small request
(issue #20's profile of metric ingestion). Every middleware and view of the control plane is
synchronous, so the chain is built as under WSGI and entered once per request; an async view
would still work (Django's sync chain runs it with ``async_to_sync``).

The request's database connections are closed when its response is (``request_finished`` runs
where the handler closes the response, a context that does not see connections the view opened,
so they were left to the garbage collector): a PostgreSQL backend is released at once.

Requests to a view that names the method in ``persistent_db_methods`` (agents' metric and log
reports, the hot path; the owners' experiment and run reads) run on a database lane instead
(controlplane.db_lane; the view's ``db_lane``, else ``reports``): the same chain, in one of a
few long-lived threads whose connections persist across requests.
"""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, get_script_prefix, resolve, set_script_prefix

from controlplane.db_lane import lane


class SyncChainASGIHandler(ASGIHandler):
    """An ASGI handler whose middleware chain is synchronous (see the module's docstring)."""

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        lane_name = _lane_of(request)
        if lane_name is not None:
            return await lane(lane_name).run(self._lane_response, request, get_script_prefix())
        # thread_sensitive: the request's own thread (ASGIHandler gives each request one), where
        # its database connection lives and where request_finished closes it.
        return await sync_to_async(self._response, thread_sensitive=True)(request)

    def _response(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        opened = connections.all(initialized_only=True)

        def close_connections() -> None:  # in this thread: ASGIHandler closes the response here
            for connection in opened:
                connection.close_if_unusable_or_obsolete()

        response._resource_closers.append(close_connections)
        return response

    def _lane_response(self, request: HttpRequest, script_prefix: str) -> HttpResponseBase:
        set_script_prefix(script_prefix)  # a context variable: the lane's thread has its own
        return self.get_response(request)


def _lane_of(request: HttpRequest) -> str | None:
    """The database lane the request's view asks for its method, or None."""
    try:
        view = resolve(request.path_info).func
    except Resolver404:
        return None
    # A Django or DRF view has view_class; a DRF viewset's function has cls.
    view_class = getattr(view, "view_class", None) or getattr(view, "cls", None)
    if request.method not in getattr(view_class, "persistent_db_methods", ()):
        return None
    return getattr(view_class, "db_lane", "reports")
