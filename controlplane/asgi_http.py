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
"""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase


class SyncChainASGIHandler(ASGIHandler):
    """An ASGI handler whose middleware chain is synchronous (see the module's docstring)."""

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

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
