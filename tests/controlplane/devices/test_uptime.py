"""The servers' liveness mark (ServerUptime) and offline_cutoff: heartbeats missed while no
server accepted them do not count against devices; a dead device is still found in time."""
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from controlplane.devices.models import ServerUptime, offline_cutoff
from controlplane.devices.uptime import mark_accepting


pytestmark = pytest.mark.usefixtures("no_server_marks")


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def window() -> timedelta:
    knobs = settings.ESTUARY
    return seconds(knobs["HEARTBEAT_INTERVAL_S"] * knobs["MISSED_HEARTBEATS"])


@pytest.mark.django_db
class TestMarkAccepting:
    def test_it_starts_an_accepting_period(self):
        now = timezone.now()
        uptime = mark_accepting(now)
        assert (uptime.up_since, uptime.seen_at, uptime.down_since) == (now, now, now)

    def test_it_extends_the_period_while_marks_keep_coming(self):
        start = timezone.now()
        mark_accepting(start)
        uptime = mark_accepting(start + ServerUptime.allowed_gap() / 2)
        assert uptime.up_since == start and uptime.down_since == start

    def test_it_records_an_outage_after_a_gap(self):
        start = timezone.now()
        mark_accepting(start)
        back = start + ServerUptime.allowed_gap() * 8
        uptime = mark_accepting(back)
        assert (uptime.down_since, uptime.up_since, uptime.seen_at) == (start, back, back)


@pytest.mark.django_db
class TestOfflineCutoff:
    def test_it_counts_all_silence_when_no_server_marks(self):
        now = timezone.now()
        assert offline_cutoff(now) == now - window()

    def test_it_counts_silence_while_a_server_accepts(self):
        now = timezone.now()
        ServerUptime.objects.create(up_since=now - window() * 3, seen_at=now,
                                    down_since=now - window() * 5)
        assert offline_cutoff(now) == now - window()

    def test_it_stops_counting_while_no_server_accepts(self):
        last_mark = timezone.now() - window() * 10  # the server has been down since then
        mark_accepting(last_mark - window() * 3)
        ServerUptime.objects.update(up_since=last_mark - window() * 3, seen_at=last_mark,
                                    down_since=last_mark - window() * 3)
        assert offline_cutoff() == last_mark - window()

    def test_it_gives_a_full_window_of_grace_after_an_outage(self):
        went_down = timezone.now() - window() * 10
        ServerUptime.objects.create(up_since=went_down - window() * 5, seen_at=went_down,
                                    down_since=went_down - window() * 5)
        back = mark_accepting().up_since
        # Within the grace, a device seen just before the outage is online, one silent for a
        # window before it is not; after the grace, only devices seen since count.
        assert offline_cutoff(back + window() / 2) == went_down - window()
        after_grace = back + window() + seconds(0.5)
        ServerUptime.objects.update(seen_at=after_grace)
        assert offline_cutoff(after_grace) == after_grace - window()

    @override_settings(ESTUARY={**settings.ESTUARY, "HEARTBEAT_INTERVAL_S": 10})
    def test_it_finds_a_dead_device_within_60_s_with_the_default_interval(self):
        last_heartbeat = timezone.now()
        mark_accepting(last_heartbeat - seconds(120))
        for tick in range(1, 13):  # the server marks every 5 s
            mark_accepting(last_heartbeat + seconds(5 * tick))
        # The reaper runs every 10 s: by its run after 40 s the device counts as offline.
        assert last_heartbeat < offline_cutoff(last_heartbeat + seconds(40))
        assert last_heartbeat >= offline_cutoff(last_heartbeat + seconds(20))
