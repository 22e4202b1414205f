"""The dashboard a researcher reads: charts read from the rendered plotly figures, the view
controls and their URL, exports against the API, lists, queue reasons, progress, the cancel
confirmation, form errors, phone layout and accessibility. Real headless Chromium against the
real daphne server; points arrive over HTTP as an agent posts them.

Browser tests are slow, so each test loads a page once and checks many things on it.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from controlplane.experiments.models import Experiment
from tests.frontend.conftest import Agent, _open_page, screenshot, user_api

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROUND_TIME = 0.32224428714666  # a constant the issue saw drawn as 15th-digit jumps


def figure(page, metric: str, path: str):
    """A value of the rendered figure of ``metric``'s chart (``data``, ``layout.yaxis``...)."""
    return page.evaluate(
        "([metric, path]) => path.split('.').reduce((o, k) => o?.[k],"
        " document.querySelector(`.chart[data-metric=\"${metric}\"]`))", [metric, path])


def query(page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


@pytest.fixture
def watched(asgi_server, owner, device_factory, experiment_factory, keep_online,
            controlplane_worker):
    """splitfed vs fedavg on one device: splitfed running with 2 of 3 rounds reported,
    fedavg queued behind it; accuracy, a constant round time, traffic and a per-entity series.
    The control plane's worker runs (its reaper too), as in production."""
    enrolled = device_factory(owner, name="cloud-07")
    agent = keep_online(Agent(asgi_server, enrolled.credential, str(enrolled.device.id)))
    experiment = experiment_factory(owner, enrolled.device, algorithm="splitfed",
                                    baselines=["fedavg"], config={"rounds": 3},
                                    preset="local-3", name="watched")
    split, fed = experiment.runs.order_by("position")
    agent.start(str(split.job.id))
    points = {str(split.id): [], str(fed.id): []}
    for run, accuracy in ((split, (0.31, 0.52)), (fed, (0.25, 0.41))):
        for step in (1, 2):
            sim = 2.0 * step
            rows = [("accuracy", step, accuracy[step - 1], sim),
                    # float noise at the 15th digit must not become a shape
                    ("round_time_s", step, ROUND_TIME + step * 1e-16, sim),
                    ("traffic_bytes", step, 30e6 * step, sim)]
            rows += [(f"waiting_time_s/worker-0{w}", step, 0.5 * w * step, sim) for w in range(3)]
            agent.report(str(run.id), rows)
            points[str(run.id)] += rows
    agent.log(str(split.id), ["round 2: accuracy 52% · test loss 1.2"])
    return experiment, split, fed, agent


class TestExperimentCharts:
    def test_it_draws_readable_charts_with_shared_controls_exports_and_cancel(
            self, owner_page, asgi_server, watched):
        experiment, split, fed, _ = watched
        page = owner_page
        page.goto(f"/experiments/{experiment.id}/")
        expect(page.locator("#live-state")).to_have_text("Live")
        page.wait_for_function("document.querySelectorAll('.chart').length === 4")

        # One chart per metric; the per-entity series share one chart with a selector.
        assert page.evaluate("[...document.querySelectorAll('.chart')].map(c => c.dataset.metric)"
                             ) == ["accuracy", "traffic_bytes", "round_time_s", "waiting_time_s/"]
        assert page.locator(".chart-title").all_inner_texts() == [
            "Accuracy", "Traffic", "Round latency", "Waiting time"]

        # Accuracy: percent on [0, 1], integer steps, titled axes.
        assert figure(page, "accuracy", "layout.yaxis.title.text") == "Accuracy (%)"
        assert figure(page, "accuracy", "layout.yaxis.tickformat") == ".0%"
        assert figure(page, "accuracy", "layout.yaxis.range") == [0, 1]
        assert figure(page, "accuracy", "layout.xaxis.title.text") == "Step (round)"
        assert figure(page, "accuracy", "layout.xaxis.dtick") >= 1
        assert figure(page, "accuracy", "layout.xaxis.tickformat") == "d"
        # Bytes in MB; a constant latency stays flat, in ms, on a range that is not noise.
        assert figure(page, "traffic_bytes", "layout.yaxis.title.text") == "Traffic (MB)"
        assert figure(page, "traffic_bytes", "data.0.y") == [30, 60]
        assert figure(page, "round_time_s", "layout.yaxis.title.text") == "Round latency (ms)"
        assert figure(page, "round_time_s", "data.0.y") == [322.244, 322.244]
        low, high = figure(page, "round_time_s", "layout.yaxis.range")
        assert low < 322.244 < high and high - low > 1
        assert figure(page, "round_time_s", "layout.yaxis.automargin") is True

        # Per-entity chart: the selector picks the worker, kept in the URL.
        select = page.locator('.chart-card[data-chart="waiting_time_s/"] select')
        expect(select.locator("option")).to_have_text(["worker-00", "worker-01", "worker-02"])
        select.select_option("worker-02")
        assert figure(page, "waiting_time_s/", "data.0.y") == [1, 2]
        assert figure(page, "waiting_time_s/", "layout.yaxis.title.text") == "Waiting time (s)"
        assert query(page)["entity.waiting_time_s"] == ["worker-02"]

        # Offline: no cloud links in plotly's toolbar, its buttons out of the tab order.
        config = page.evaluate("document.querySelector('.chart')._context")
        assert (config["displaylogo"], config["showSendToCloud"]) == (False, False)
        titles = page.evaluate("[...document.querySelectorAll('.modebar-btn')]"
                               ".map(b => b.dataset.title)")
        assert titles and not [t for t in titles if re.search(r"cloud|studio|share|plotly", t,
                                                                re.I)], titles
        assert page.evaluate("document.querySelectorAll('.chart a[href]').length") == 0
        assert page.evaluate("[...document.querySelectorAll('.chart a, .chart button')]"
                             ".filter(b => b.tabIndex >= 0).length") == 0

        # One hover shows every run at that step.
        assert figure(page, "accuracy", "layout.hovermode") == "x unified"
        page.evaluate("window.Plotly.Fx.hover("
                      "document.querySelector('.chart[data-metric=accuracy]'), {xval: 2})")
        hover = page.locator('.chart[data-metric="accuracy"] .hoverlayer')
        expect(hover).to_contain_text("splitfed")
        expect(hover).to_contain_text("fedavg")
        expect(hover).to_contain_text("52.00%")

        # Smoothing, log scale, x axis and legend toggles: every chart, and the URL.
        page.locator("#smoothing").evaluate(  # a range input: set it as a drag would
            "input => { input.value = '0.5'; input.dispatchEvent(new Event('input')); }")
        assert figure(page, "accuracy", "data.0.y")[1] != 0.52  # smoothed (debiased EMA)
        assert len(figure(page, "accuracy", "data")) == 4  # the raw lines stay, faint
        page.get_by_label("Log scale").check()
        assert figure(page, "traffic_bytes", "layout.yaxis.type") == "log"
        page.get_by_label("x-axis").select_option("sim_time_s")
        assert figure(page, "accuracy", "layout.xaxis.title.text") == "Emulated time (s)"
        page.locator("#legend").get_by_role("button", name="fedavg").click()
        assert page.evaluate("[...document.querySelectorAll('.chart')].map(c => c.data[1].visible)"
                             ) == [False] * 4
        params = query(page)
        assert (params["smooth"], params["log"], params["x"], params["hide"]) == (
            ["0.5"], ["1"], ["sim_time_s"], ["1"])
        screenshot(page, "experiment-controls")

        page.reload()  # a shared link opens the same view
        page.wait_for_function("document.querySelectorAll('.chart').length === 4")
        expect(page.locator("#x-axis")).to_have_value("sim_time_s")
        expect(page.locator("#smoothing")).to_have_value("0.5")
        expect(page.get_by_label("Log scale")).to_be_checked()
        expect(page.locator("#legend").get_by_role("button", name="fedavg")).to_have_attribute(
            "aria-pressed", "false")
        assert 1 < figure(page, "waiting_time_s/", "data.0.y")[-1] < 2  # worker-02, smoothed

        # Progress of the running run; the queued run says why it waits.
        split_card = page.locator(f'.run-card[data-run-id="{split.id}"]')
        expect(split_card.locator(".progress")).to_have_text(
            re.compile(r"^Round 2 of 3 · about \d+ (s|min) left$"))
        expect(page.locator(f'.run-card[data-run-id="{fed.id}"] .queue-reason')).to_have_text(
            "Position 1 of 1 in cloud-07's queue; cloud-07 is running splitfed of “watched”.")

        # The config is a table, the logs have the round's line.
        config_row = page.get_by_role("table", name="Configuration").locator("tr", has_text="rounds")
        expect(config_row.locator("td")).to_have_text("3")
        expect(page.locator("#logs")).to_contain_text("[splitfed] round 2: accuracy 52%")

        # Per-step exports: every point, the same as the API's JSON.
        api = user_api(asgi_server, experiment.owner)
        as_json = api.get(f"{asgi_server}/api/v1/experiments/{experiment.id}/points/",
                          timeout=10).json()["points"]
        assert len(as_json) == 2 * 2 * 6
        csv_url = page.get_by_role("link", name="Per-step CSV", exact=True).get_attribute("href")
        rows = list(csv.DictReader(io.StringIO(page.request.get(csv_url).text())))
        assert [(r["run"], r["method"], r["name"], int(r["step"]), float(r["value"]))
                for r in rows] == [(p["run"], p["method"], p["name"], p["step"], p["value"])
                                   for p in as_json]
        run_json = page.request.get(f"/api/v1/runs/{fed.id}/metrics/?format=json").json()
        run_csv = list(csv.DictReader(io.StringIO(
            page.request.get(f"/api/v1/runs/{fed.id}/metrics/?format=csv").text())))
        assert [(r["name"], int(r["step"]), float(r["value"])) for r in run_csv] == [
            (p["name"], p["step"], p["value"]) for p in run_json["points"]]

        # Cancel asks first; afterwards the message and the live badge say how it ended.
        page.get_by_role("button", name="Cancel", exact=True).click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Cancel “watched”?")
        dialog.get_by_role("button", name="Keep running").click()
        expect(dialog).to_be_hidden()
        assert Experiment.objects.get(pk=experiment.id).status == "running"
        page.get_by_role("button", name="Cancel", exact=True).click()
        dialog.get_by_role("button", name="Cancel the experiment").click()
        expect(page.locator("#cancel-message")).to_have_text("Cancelled: 2 runs stopped.")
        expect(page.locator("#live-state")).to_have_text("Finished: cancelled")
        expect(page.locator("#experiment-status")).to_have_text("cancelled")

    def test_it_compares_configs_and_keeps_offline(self, owner_page, browser_context,
                                                   asgi_server, watched):
        experiment, split, fed, _ = watched
        page = owner_page
        page.goto(f"/compare/?runs={split.id},{fed.id}&log=1")
        expect(page.locator("#charts")).to_have_attribute("data-ready", "1")
        assert figure(page, "accuracy", "layout.yaxis.type") == "log"
        diff = page.get_by_role("table", name="Configuration differences")
        expect(diff.locator("thead th")).to_have_text(["Key", "watched · splitfed",
                                                       "watched · fedavg"])
        keys = diff.locator("tbody th").all_text_contents()
        assert keys and "rounds" not in keys  # both ran 3 rounds
        assert set(keys) == set(split.config) ^ set(fed.config) | {
            k for k in set(split.config) & set(fed.config) if split.config[k] != fed.config[k]}
        expect(page.locator("summary")).to_contain_text("shared by all runs")

        # The offline check itself: a request elsewhere is caught (and fails the test).
        other, errors = _open_page(browser_context, [], asgi_server)
        other.goto("/accounts/login/")
        other.evaluate("fetch('http://192.0.2.1/x').catch(() => null)")
        other.wait_for_timeout(200)
        other.close()
        assert any("request to another address: http://192.0.2.1/x" in e for e in errors)


class TestLists:
    def test_it_searches_filters_sorts_and_pages_experiments_and_results(
            self, owner_page, asgi_server, owner, outsider, device_factory, experiment_factory):
        host = device_factory(owner, name="cloud-08").device
        made = []
        for index in range(27):
            name = f"{'alpha' if index % 3 == 0 else 'beta'} {index:02d}"
            made.append(experiment_factory(owner, host, name=name, preset="local-3",
                                           config={"rounds": 1}))
        experiment_factory(outsider, device_factory(outsider, name="theirs").device,
                           name="alpha theirs", preset="local-3")
        # Finished ones with a final accuracy and a duration.
        done = made[0]
        Experiment.objects.filter(pk=done.pk).update(
            status="succeeded", finished_at=done.created + timedelta(seconds=125))
        Experiment.objects.filter(pk=made[1].pk).update(
            status="failed", created=timezone.now() - timedelta(days=3))
        from controlplane.metrics.models import MetricPoint
        run = done.runs.get(position=0)
        MetricPoint.objects.bulk_create([
            MetricPoint(run=run, name="accuracy", step=s, value=v, sim_time_s=s, wall_time_s=s)
            for s, v in ((1, 0.5), (2, 0.8123))])

        page = owner_page
        page.goto("/experiments/")
        table = page.get_by_role("table", name="Experiments")
        expect(table.locator("tbody tr")).to_have_count(25)
        expect(page.locator("#page-info")).to_have_text("Page 1 of 2 · 27 experiments")
        page.get_by_role("link", name="Next").click()
        expect(table.locator("tbody tr")).to_have_count(2)

        page.get_by_label("Search").fill("alpha")
        page.get_by_role("button", name="Filter").click()
        expect(table.locator("tbody tr")).to_have_count(9)  # not the outsider's
        row = table.locator("tr", has_text="alpha 00")
        expect(row.locator(".main-metric")).to_have_text("Accuracy 81.23%")
        expect(row.locator(".duration")).to_have_text("2 min 05 s")

        page.get_by_role("link", name="Name").click()  # sort by name, ascending
        names = table.locator("tbody td:first-child").all_inner_texts()
        assert names == sorted(names) and len(names) == 9
        assert query(page)["search"] == ["alpha"]
        page.get_by_role("link", name="Name").click()  # and descending
        assert table.locator("tbody td:first-child").all_inner_texts() == names[::-1]

        page.get_by_label("Status").select_option("succeeded")
        page.get_by_role("button", name="Filter").click()
        expect(table.locator("tbody tr")).to_have_count(1)
        page.goto("/experiments/?status=failed&created_before="
                  f"{(timezone.now() - timedelta(days=2)).date()}")
        expect(table.locator("tbody td:first-child")).to_have_text(["beta 01"])
        page.goto("/experiments/?created_after=not-a-date")
        expect(page.locator("#filter-error-after")).to_contain_text("Date has wrong format")

        # Results: the same filters over runs' final values.
        page.goto("/results/?search=alpha+00")
        final = page.get_by_role("table", name="Final value of each metric per run")
        expect(final.locator("tbody tr")).to_have_count(1)
        expect(final.locator("thead")).to_contain_text("Accuracy")

        # The API filters and sorts the same way.
        api = user_api(asgi_server, owner)
        answer = api.get(f"{asgi_server}/api/v1/experiments/?search=alpha&ordering=-name"
                         "&page_size=5", timeout=10).json()
        assert answer["count"] == 9
        assert [e["name"] for e in answer["results"]] == [
            f"alpha {i:02d}" for i in (24, 21, 18, 15, 12)]
        assert api.get(f"{asgi_server}/api/v1/experiments/?ordering=size",
                       timeout=10).status_code == 400


class TestFormAndLayout:
    def test_it_shows_every_form_error_at_once_fits_a_phone_and_is_accessible(
            self, owner_page, browser_context, asgi_server, owner, watched):
        experiment, split, fed, agent = watched
        page = owner_page
        # Devices: the job it runs and its role, its queue, its agent's load.
        agent.post("/api/v1/agents/heartbeat/", {"running_jobs": [str(split.job.id)],
                                                 "resources": {
            "cpu_percent": 12.4, "memory_percent": 43.0, "memory_used_mib": 7000,
            "memory_total_mib": 16000, "gpus": [{"name": "NVIDIA H100", "memory_used_mib": 9318,
                                                 "memory_total_mib": 81920,
                                                 "utilization_percent": 80}]}})
        page.goto("/devices/")
        row = page.locator("tr", has_text="cloud-07")
        expect(row.locator(".current-job")).to_have_text(
            "running splitfed of “watched” (all roles (emulated))")
        expect(row.locator(".queue-depth")).to_have_text("1 job queued")
        expect(row.locator(".load")).to_have_text("CPU 12% · mem 43% · GPU 80% (9.1/80 GiB)")

        page.goto("/experiments/new/?algorithm=splitfed")
        page.wait_for_selector("#experiment-form[data-ready]", timeout=60_000)
        page.get_by_label("rounds", exact=True).fill("-1")
        page.get_by_label("batch_size", exact=True).fill("0")
        page.get_by_role("button", name="Launch experiment").click()
        expect(page.locator('[data-error-for="name"]')).not_to_be_empty()
        expect(page.locator('[data-error-for="config.rounds"]')).to_contain_text(
            "greater than or equal to 1")
        expect(page.locator('[data-error-for="config.batch_size"]')).to_contain_text(
            "greater than or equal to 1")
        assert not Experiment.objects.exclude(pk=experiment.pk).exists()

        # Keyboard: the first Tab reaches the skip link, which jumps to the content.
        page.goto("/experiments/")
        page.keyboard.press("Tab")
        expect(page.locator(".skip-link")).to_be_focused()
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        # Every badge reads at WCAG AA contrast (4.5:1).
        ratios = page.evaluate("""() => {
          const lum = (rgb) => { const [r, g, b] = rgb.match(/\\d+/g).slice(0, 3).map(Number)
            .map(c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
          return ['online', 'busy', 'queued', 'degraded', 'failed', 'cancelled', 'offline',
                  'succeeded', 'running'].map(state => {
            const b = document.createElement('span'); b.className = `badge ${state}`;
            b.textContent = state; document.body.append(b);
            const s = getComputedStyle(b); const [f, g] = [lum(s.color), lum(s.backgroundColor)];
            b.remove(); return [state, (Math.max(f, g) + 0.05) / (Math.min(f, g) + 0.05)]; });
        }""")
        assert all(ratio >= 4.5 for _, ratio in ratios), ratios

        # A phone: no page is wider than the screen; the header's links stay on it.
        page.set_viewport_size({"width": 390, "height": 844})
        charted = {f"/experiments/{experiment.id}/", f"/compare/?runs={split.id},{fed.id}"}
        for path in ("/experiments/", f"/experiments/{experiment.id}/", "/devices/",
                     "/results/", f"/compare/?runs={split.id},{fed.id}", "/experiments/new/"):
            page.goto(path)
            if path in charted:
                page.wait_for_function("document.querySelectorAll('.chart').length === 4")
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], (path, widths)
            logout = page.get_by_role("button", name="Log out").bounding_box()
            assert logout["x"] + logout["width"] <= 390, path
        screenshot(page, "phone-compare")
