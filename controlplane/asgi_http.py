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
few long-lived threads whose connections persist across requests. Such a request crosses to the lane once: ``request_started``, the request's creation, the chain and the
response's ``close()`` (``request_finished``) all run in that one call. Django's handler would
add a fresh thread per request for the signals and the close (its ``ThreadSensitiveContext``)
and two more crossings (issue #20: with the raw-SQL lookups, a metric POST through the ASGI
application went from 6.4 to 4.6 ms of CPU in one process; its event loop's share to 0.2 ms).
A lane request is not cancelled when its client disconnects: its thread runs to the end either
way, and its answer is then dropped by the server.
"""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.asgi import get_script_prefix as scope_script_prefix
from django.db import connections
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve, set_script_prefix

from controlplane.db_lane import lane


class SyncChainASGIHandler(ASGIHandler):
    """An ASGI handler whose middleware chain is synchronous (see the module's docstring)."""

    #: A body goes to the server in messages of this size: Django's 64 KiB cut a list page of
    #: 100-150 kB into three, each one more trip through the server's event loop.
    chunk_size = 2**20

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send) -> None:
        lane_name = _lane_of(scope) if scope["type"] == "http" else None
        if lane_name is not None:
            await self._handle_on_lane(lane_name, scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _handle_on_lane(self, lane_name: str, scope, receive, send) -> None:
        """The whole request on the lane in one call (see the module's docstring)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = await lane(lane_name).run(self._lane_request, scope, body_file)
        try:
            await self.send_response(response, send)
        finally:
            if response.streaming:  # closed once sent; others were closed on the lane
                await lane(lane_name).run(response.close)

    def _lane_request(self, scope, body_file) -> HttpResponseBase:
        """On the lane: what :meth:`ASGIHandler.handle` does around the chain, in this thread."""
        try:
            set_script_prefix(scope_script_prefix(scope))
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, response = self.create_request(scope, body_file)
            if request is not None:
                response = self.get_response(request)
                response._handler_class = self.__class__
            if not response.streaming:
                response.close()  # request_finished, in the thread whose connections it checks
            return response
        finally:
            body_file.close()

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
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


def _lane_of(scope: dict) -> str | None:
    """The database lane the request's view asks for its method, or None (its path resolved as
    :class:`~django.core.handlers.asgi.ASGIRequest` will resolve it).

    Django's handler then resolves the same path again. Left so: one resolution costs 8-16 us of
    CPU (bench/read_paths.py; the control plane's paths, run detail and metric POST included)
    against 3.5-4.5 ms for a whole run-detail GET through this handler, 0.2-0.4 %, below what a
    loaded machine lets one measure. Passing the match through (tried: a copy of the scope
    carrying it, used by an overridden ``BaseHandler.resolve_request`` only for the same path
    and resolver) would override a Django internal for that.
    """
    prefix = scope_script_prefix(scope)
    path = scope["path"].removeprefix(prefix) if prefix else scope["path"]
    try:
        view = resolve(path).func
    except Resolver404:
        return None
    # A Django or DRF view has view_class; a DRF viewset's function has cls.
    view_class = getattr(view, "view_class", None) or getattr(view, "cls", None)
    if scope.get("method") not in getattr(view_class, "persistent_db_methods", ()):
        return None
    return getattr(view_class, "db_lane", "reports")
