"""A Python client for Estuary's REST API and live view, and its command line
(``python -m estuary_client``). See README.md, "Scripts: the Python client and command line"."""
from estuary_client.client import Client, Experiment
from estuary_client.errors import (
    ApiError,
    AuthFailed,
    Conflict,
    EstuaryError,
    InvalidInput,
    NotFound,
    ServerUnreachable,
)
from estuary_client.watch import Ended, LogLines, Point, RunChanged

__all__ = ["ApiError", "AuthFailed", "Client", "Conflict", "Ended", "EstuaryError",
           "Experiment", "InvalidInput", "LogLines", "NotFound", "Point", "RunChanged",
           "ServerUnreachable"]
