"""A whole Estuary on one machine, for ``./estuary up`` and ``./estuary test``.

Not part of the agent daemon: it starts Redis (its own unless ``REDIS_URL`` is set), the ASGI
server, the control plane's Celery worker and beat, and three local agents, then launches a demo
experiment. Every process it starts runs in its own process group, is restarted if it dies, and
is stopped, in reverse order, when the stack stops; nothing else is touched.

Modules: ``processes`` (start, supervise and stop children), ``redis`` (a Redis of our own),
``api`` (the REST calls the stack makes), ``demo_user`` (the demo account, run inside Django),
``files`` (the data folder's private files and the secret key), ``up`` and ``testrun`` (the two
commands), ``__main__`` (their command line).
"""


class StackError(RuntimeError):
    """The stack cannot start or run; the message says what to do."""
