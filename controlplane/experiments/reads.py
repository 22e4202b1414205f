"""Pages of the owners' experiment and run lists, kept rendered between writes (issue #20).

The dashboard and scripts poll these lists; building a page of 50 experiments costs ~25 ms of
CPU (8 queries, a row per experiment, run and job, the JSON), so twenty clients polling at once
queue for hundreds of milliseconds on two cores. A page changes only when something is written
or by time alone, so each process keeps the pages it rendered and serves one again while
neither happened:

- **Writes.** Database triggers (migration ``experiments/0005``) append a :class:`ReadChange`
  row for every write that can change a list: any row of experiments and runs, jobs (all but a
  heartbeat's ``listed_at``), devices (name and worker state). Every writer counts — the API's
  processes, Celery, the reaper, the admin, raw SQL — and a change becomes visible exactly when
  its write commits. :func:`read_version` reads ``(epoch, folded + count)`` in one statement; it
  only grows, so a page rendered at version v is current while the version is v. (The version
  is read before the page's queries: a page may hold newer data than its version, never older.)
- **Time.** A running experiment's ``duration_s`` grows: such a row is kept in two halves and
  the duration is written in at each answer, to that answer's now. A queued job's waiting reason
  says whether its device is offline, which time alone changes (missed heartbeats) and a
  heartbeat changes back without a write that counts: the page keeps each such device's status
  sentence and is served only while a fresh reading of those devices gives the same sentences.
  A list ordered by duration changes order with time: never cached.

A hit costs one query for the version and, when the page has queued jobs, two for the devices'
state, instead of eight plus the rendering. Reads inside a transaction are not cached (a
version read there may include the transaction's own writes, which a rollback undoes).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.paginator import Paginator
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from controlplane.conditional import EtagMemo
from controlplane.devices.models import Device, offline_cutoff
from controlplane.experiments.models import JobState, ReadChange, ReadChangeFold, Run
from controlplane.experiments.serializers import queue_board, response_now
from controlplane.pagination import FilteredListMixin

#: Fold the change log into the fold row once it holds this many rows.
FOLD_AT = 1000
#: Rendered bytes kept per view and process (least recently used pages go first).
CACHE_BYTES = 32 * 2**20

_VERSION_SQL = (
    f"SELECT f.epoch, f.folded, (SELECT COUNT(*) FROM {ReadChange._meta.db_table}) "
    f"FROM {ReadChangeFold._meta.db_table} f WHERE f.id = %s")

Version = tuple[str, int]


def read_version() -> Version | None:
    """The lists' version now: changes whenever a committed write can change a list. None
    inside a transaction (see the module's docstring)."""
    if connection.in_atomic_block:
        return None
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(_VERSION_SQL, [ReadChangeFold.ROW])
            row = cursor.fetchone()
        if row is not None:
            epoch, folded, pending = row
            if pending >= FOLD_AT:
                fold_changes()
            return str(epoch), folded + pending
        # First use, or the tables were emptied: a new row, with a new epoch.
        ReadChangeFold.objects.bulk_create([ReadChangeFold()], ignore_conflicts=True)
    return None


def fold_changes() -> int:
    """Delete the change log's committed rows, adding their number to the fold row in the same
    transaction (the version is unchanged). Returns how many were folded."""
    try:
        with transaction.atomic():
            if ReadChangeFold.objects.select_for_update().filter(
                    pk=ReadChangeFold.ROW).first() is None:
                return 0
            last = ReadChange.objects.aggregate(last=Max("id"))["last"]
            if last is None:
                return 0
            folded, _ = ReadChange.objects.filter(id__lte=last).delete()
            ReadChangeFold.objects.filter(pk=ReadChangeFold.ROW).update(
                folded=F("folded") + folded)
            return folded
    except IntegrityError:  # a concurrent flush; the next read folds
        return 0


_renderer = JSONRenderer()


def render(data: Any) -> bytes:
    """``data`` as the API's JSON renderer writes it."""
    return _renderer.render(data)


@dataclass(frozen=True)
class RenderedRow:
    """One row of a page as JSON. A row with ``created`` is a running experiment's: its
    ``duration_s`` (seconds since ``created``) goes between ``head`` and ``tail``."""

    head: bytes
    created: datetime | None = None
    tail: bytes = b""

    @classmethod
    def of(cls, row: dict[str, Any], created: datetime | None = None,
           key: str = "duration_s") -> RenderedRow:
        """``row`` rendered; with ``created``, split around ``key``'s value."""
        if created is None:
            return cls(render(row))
        keys = list(row)
        at = keys.index(key)
        head = render({k: row[k] for k in keys[:at]})[:-1] + b"," + render(key) + b":"
        tail = b"," + render({k: row[k] for k in keys[at + 1:]})[1:]
        return cls(head, created, tail)

    def at(self, now: datetime) -> bytes:
        if self.created is None:
            return self.head
        # A finite float's JSON is its repr, as the renderer writes it (a test compares).
        duration = round(max(0.0, (now - self.created).total_seconds()), 3)
        return b"%b%b%b" % (self.head, repr(duration).encode(), self.tail)

    @property
    def size(self) -> int:
        return len(self.head) + len(self.tail)


@dataclass(frozen=True)
class CachedPage:
    """A rendered page, current while the version is ``version`` and the devices that queued
    jobs on it wait for still read as ``device_details``."""

    version: Version | None
    count: int
    rows: tuple[RenderedRow, ...]
    device_details: dict[Any, str] = field(default_factory=dict)
    #: For a page without running rows (the same bytes at every answer).
    etags: EtagMemo = field(default_factory=EtagMemo)

    def answer(self, envelope: dict[str, Any], now: datetime) -> HttpResponse:
        """The answer: ``envelope`` (count, next, previous) then the rows as ``results``."""
        head = render(envelope)[:-1] + b',"results":['
        body = head + b",".join(row.at(now) for row in self.rows) + b"]}"
        response = HttpResponse(body, content_type=_renderer.media_type)
        if all(row.created is None for row in self.rows):
            response["ETag"] = self.etags.etag(head, body)
        return response

    @property
    def size(self) -> int:
        return sum(row.size for row in self.rows)

    def devices_unchanged(self) -> bool:
        """Whether the devices its queued jobs wait on read as they did (one query for their
        state, one for the offline cutoff; none when it has no queued job)."""
        if not self.device_details:
            return True
        return device_details(self.device_details) == self.device_details


def device_details(device_ids: Iterable[Any]) -> dict[Any, str]:
    """Each device's status sentence (``Device.status_detail``) now. Raw SQL, as every kept
    page with queued jobs asks on each answer: the ORM's building of the query cost more than
    the rest of such an answer's queries."""
    ids = [Device._meta.pk.get_db_prep_value(device_id, connection) for device_id in device_ids]
    if not ids:
        return {}
    cutoff = offline_cutoff()
    devices = Device.objects.raw(
        f"SELECT id, last_seen, worker_consuming, worker_detail FROM {Device._meta.db_table} "
        f"WHERE id IN ({', '.join(['%s'] * len(ids))})", ids)
    return {device.pk: device.status_detail(cutoff) for device in devices}


def queued_devices(runs: Iterable[Run], cutoff: Callable[[], datetime]) -> dict[Any, str]:
    """The status sentences of the devices the queued jobs of ``runs`` wait on (prefetched
    jobs and devices), judged by ``cutoff()`` (called only if there are any)."""
    devices = {job.device_id: job.device for run in runs for job in run.all_jobs
               if job.state == JobState.QUEUED and job.device is not None}
    if not devices:
        return {}
    at = cutoff()
    return {device_id: device.status_detail(at) for device_id, device in devices.items()}


class KeptPages:
    """Rendered pages a process keeps, least recently used first out, ``max_bytes`` of them at
    most (each value says its ``size``). Safe across the threads of a database lane."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pages: OrderedDict[Hashable, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: Hashable, page: Any) -> None:
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            if page.size > self.max_bytes:
                return
            self._pages[key] = page
            self._bytes += page.size
            while self._bytes > self.max_bytes:
                _, evicted = self._pages.popitem(last=False)
                self._bytes -= evicted.size

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._bytes = 0


class CachedListMixin(FilteredListMixin):
    """``list`` answered from :class:`KeptPages` while the page is current (see the module's
    docstring); the same bytes as the uncached answer."""

    #: Each view class its own.
    page_cache: KeptPages

    def cache_key(self, request: Request, query: dict[str, Any]) -> Hashable | None:
        """What a page depends on besides the data (its viewer, its validated query); None
        when it must not be cached."""
        if _renderer.get_indent(request.accepted_media_type, {}) is not None:
            return None  # ?indent: rare, and rendered differently
        return request.user.pk, tuple(sorted(query.items()))

    def running_since(self, item: Any) -> datetime | None:
        """For an item whose row holds a duration that grows with time: its start."""
        return None

    def list(self, request: Request, *args, **kwargs) -> HttpResponse:
        query = self.list_query(request)
        key = self.cache_key(request, query.validated_data)
        version = read_version() if key is not None else None
        if version is not None:
            page = self.page_cache.get(key)
            if page is not None and page.version == version and page.devices_unchanged():
                paginator = self.paginator
                paginator.request = request
                paginator.page = Paginator(range(page.count), paginator.get_page_size(request)
                                           ).page(query.validated_data.get("page", 1))
                return self._answer(page, timezone.now())
        items = self.paginate_queryset(self.filtered_queryset(query))
        serializer = self.get_serializer(items, many=True)
        rows = serializer.data
        runs = [run for item in items for run in serializer.child.runs_of(item)]
        page = CachedPage(
            version=version, count=self.paginator.page.paginator.count,
            rows=tuple(RenderedRow.of(row, self.running_since(item))
                       for item, row in zip(items, rows)),
            device_details=queued_devices(runs, queue_board(serializer).cutoff))
        if version is not None:
            self.page_cache.put(key, page)
        return self._answer(page, response_now(serializer))

    def _answer(self, page: CachedPage, now: datetime) -> HttpResponse:
        return page.answer({"count": page.count, "next": self.paginator.get_next_link(),
                            "previous": self.paginator.get_previous_link()}, now)
