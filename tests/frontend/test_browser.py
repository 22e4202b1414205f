"""The dashboard in a real headless Chromium against the real daphne server.

Experiments are created through the API (or its validation + action functions); metric points
arrive through the real HTTP ingestion endpoint, as an agent would post them.
"""
from __future__ import annotations

import csv
import re

import pytest
import requests
from playwright.sync_api import expect

from controlplane.experiments.models import Experiment
from ml import registry
from tests.fixtures.servers import PASSWORD
from tests.frontend.conftest import Agent, enrol_agent, screenshot, user_api

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def wait_for_trace_lengths(page, metric: str, lengths: list[int]) -> None:
    """Wait until the chart of ``metric`` has ``lengths`` points in its traces (run order)."""
    page.wait_for_function(
        "([metric, lengths]) => {"
        "  const chart = document.querySelector(`.chart[data-metric=\"${metric}\"]`);"
        "  return !!chart && !!chart.data"
        "    && JSON.stringify(chart.data.map(t => t.x.length)) === JSON.stringify(lengths);"
        "}", arg=[metric, lengths])


def open_form(page, algorithm: str) -> None:
    """Open the new-experiment form and wait until it is built from the catalogue (the
    server's first catalogue request imports every algorithm module: allow for it)."""
    page.goto(f"/experiments/new/?algorithm={algorithm}")
    page.wait_for_selector("#experiment-form[data-ready]", timeout=60_000)


def launch(base_url: str, user, agent: Agent, **body) -> dict:
    """POST /api/v1/experiments/ as ``user``, hosted by ``agent``'s device."""
    agent.heartbeat()  # the host must be online when the experiment is created
    response = user_api(base_url, user).post(f"{base_url}/api/v1/experiments/", timeout=10,
                                             json={"host": agent.device_id, **body})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def reported_experiment(asgi_server, owner, device_factory, experiment_factory, keep_online):
    """splitfed vs fedavg with a few points per run, reported over HTTP by the hosting device
    (kept online, so its queued jobs stay queued)."""
    enrolled = device_factory(owner, name="cloud-07")
    agent = keep_online(Agent(asgi_server, enrolled.credential, str(enrolled.device.id)))
    experiment = experiment_factory(owner, enrolled.device, algorithm="splitfed",
                                    baselines=["fedavg"], config={"rounds": 3},
                                    preset="local-3", name="split vs fed")
    split, fed = experiment.runs.order_by("position")
    agent.report(str(split.id), [("accuracy", 0, 0.50, 1.0), ("accuracy", 1, 0.70, 2.0),
                                 ("accuracy", 2, 0.80, 3.0), ("loss", 2, 0.6, 3.0)])
    agent.report(str(fed.id), [("accuracy", 0, 0.40, 4.0), ("accuracy", 1, 0.55, 8.0),
                               ("loss", 1, 1.1, 8.0)])
    agent.log(str(fed.id), ["fedavg round 1 done"])
    return experiment


class TestLoginAndDevices:
    def test_it_logs_in_and_shows_live_device_status(self, anonymous_page, asgi_server, owner):
        page = anonymous_page
        agent = enrol_agent(asgi_server, owner, "jetson-07", profile="jetson-orin-nano")
        page.goto("/devices/")
        expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/devices/$"))
        screenshot(page, "login")
        page.get_by_label("Username").fill(owner.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/devices/$"))

        row = page.locator("tr", has_text="jetson-07")
        expect(row).to_contain_text("jetson-orin-nano")
        expect(row).to_contain_text("250")  # the profile's GFLOP/s
        agent.heartbeat()
        expect(row.locator(".status .badge")).to_have_text("online")
        screenshot(page, "devices")
        # No heartbeat for 3 intervals: the page turns it offline without a reload.
        expect(row.locator(".status .badge")).to_have_text("offline", timeout=10_000)

    def test_it_says_why_a_degraded_device_takes_no_jobs(self, owner_page, asgi_server, owner,
                                                          keep_online):
        page = owner_page
        agent = enrol_agent(asgi_server, owner, "cloud-deaf")
        agent.worker = {"consuming": False, "detail": "broker unreachable since "
                        "2026-12-06T01:00:00+00:00: Connection refused"}
        keep_online(agent)
        experiment = launch(asgi_server, owner, agent, name="waits", algorithm="fedavg",
                            preset="local-3", config={"rounds": 1})
        page.goto("/devices/")
        row = page.locator("tr", has_text="cloud-deaf")
        expect(row.locator(".status .badge")).to_have_text("degraded")
        expect(row.locator(".status-detail")).to_contain_text(
            "not taking jobs: broker unreachable since")
        page.goto(f"/experiments/{experiment['id']}/")
        expect(page.locator(".run-card .queue-reason")).to_contain_text("not taking jobs")

    def test_it_issues_an_enrolment_token_and_the_command_that_uses_it(self, owner_page,
                                                                        asgi_server):
        page = owner_page
        page.goto("/devices/")
        page.get_by_label("Device name").fill("jetson-08")
        page.get_by_label("Profile").select_option("jetson-nx")
        page.get_by_role("button", name="Create enrolment token").click()
        token = page.locator("#token-value")
        expect(token).not_to_be_empty()
        expected = (f"python -m agents run --server {asgi_server} --token {token.inner_text()} "
                    f"--name jetson-08 --profile jetson-nx")
        expect(page.locator("#agent-command")).to_have_text(expected)
        screenshot(page, "devices-token")

        enrolment = requests.post(f"{asgi_server}/api/v1/agents/enrol/", timeout=10, json={
            "token": token.inner_text(), "name": "jetson-08", "profile": "jetson-nx"})
        assert enrolment.status_code == 201, enrolment.text
        page.reload()
        expect(page.locator("tr", has_text="jetson-08")).to_contain_text("jetson-nx")


    def test_it_lists_and_revokes_enrolment_tokens(self, owner_page, asgi_server, owner,
                                                   outsider):
        page = owner_page
        enrol_agent(asgi_server, owner, "jetson-09", profile="jetson-nx")
        user_api(asgi_server, outsider).post(f"{asgi_server}/api/v1/enrolment-tokens/",
                                             json={"note": "outsider's token"}, timeout=10)
        page.goto("/devices/")
        page.get_by_label("Note (optional)").fill("bench 3")
        page.get_by_role("button", name="Create enrolment token").click()
        secret = page.locator("#token-value")
        expect(secret).not_to_be_empty()
        tokens = page.get_by_role("table", name="Enrolment tokens")
        row = tokens.locator("tr", has_text="bench 3")
        expect(row.locator(".status .badge")).to_have_text("active")
        expect(tokens).not_to_contain_text("outsider's token")
        expect(tokens).not_to_contain_text(secret.inner_text())  # shown once, never listed

        row.get_by_role("button", name="Revoke").click()  # a POST with the CSRF token
        expect(row.locator(".status .badge")).to_have_text("revoked")
        screenshot(page, "devices-tokens")
        refused = requests.post(f"{asgi_server}/api/v1/agents/enrol/", timeout=10, json={
            "token": secret.inner_text(), "name": "jetson-10", "profile": "jetson-nx"})
        assert refused.status_code == 400 and "revoked" in refused.text

        # A device's New credential button issues a replacement token for that device only.
        page.locator("tr", has_text="jetson-09").get_by_role("button",
                                                            name="New credential").click()
        expect(page.locator("#token-kind")).to_have_text("Replacement token for jetson-09")
        replacement = page.locator("#token-value").inner_text()
        expect(page.locator("#agent-command")).to_contain_text(
            f"--token {replacement} --name jetson-09 --profile jetson-nx")
        expect(tokens.locator("tr", has_text="jetson-09")).to_contain_text("active")
        again = requests.post(f"{asgi_server}/api/v1/agents/enrol/", timeout=10, json={
            "token": replacement, "name": "jetson-09", "profile": "jetson-nx"})
        assert again.status_code == 200, again.text


class TestNewExperiment:
    def test_it_builds_the_form_from_the_schema(self, owner_page):
        page = owner_page
        open_form(page, "splitfed")
        schema = registry.get("splitfed").json_schema()
        for key in schema["properties"]:
            if key != "testbed":  # the testbed has its own picker
                expect(page.locator(f"#field-{key}")).to_be_attached()
        rounds = page.get_by_label("rounds", exact=True)
        expect(rounds).to_have_attribute("type", "number")
        expect(rounds).to_have_attribute("min", str(schema["properties"]["rounds"]["minimum"]))
        expect(page.locator("#field-device option")).to_have_text(["cpu", "cuda"])
        expect(page.get_by_label("fedavg")).to_be_checked()

    def test_it_builds_a_form_that_sends_the_defaults_for_every_method(self, owner_page):
        """For each method of the registry: one input per config key, all its baselines
        offered, and the form, submitted untouched, sends a config that the method's schema
        parses back to its defaults. The page's POST is answered in the page by the test
        (nothing is created; Playwright routing would turn off the shared HTTP cache)."""
        page = owner_page
        methods = registry.all_methods()
        page.add_init_script("""
            window.sentBodies = [];
            const realFetch = window.fetch;
            window.fetch = (url, init = {}) => {
              if (init.method === "POST" && String(url).endsWith("/api/v1/experiments/")) {
                window.sentBodies.push(JSON.parse(init.body));
                return Promise.resolve(new Response(
                  JSON.stringify({name: ["seen by the test"]}),
                  {status: 400, headers: {"Content-Type": "application/json"}}));
              }
              return realFetch(url, init);
            };""")
        open_form(page, methods[0].name)
        expect(page.locator("#algorithm option")).to_have_text([m.name for m in methods])
        page.get_by_label("Experiment name").fill("every method")
        for method in methods:
            page.get_by_label("Algorithm", exact=True).select_option(method.name)
            keys = page.evaluate(
                "[...document.querySelectorAll('#config-fields [data-key]')].map(i => i.dataset.key)")
            assert keys == [k for k in method.json_schema()["properties"] if k != "testbed"]
            offered = page.evaluate(
                "[...document.querySelectorAll('#baselines input:checked')].map(b => b.value)")
            assert offered == list(method.baselines)
            page.get_by_role("button", name="Launch experiment").click()
            expect(page.locator('[data-error-for="name"]')).to_have_text("seen by the test")
            body = page.evaluate("window.sentBodies.at(-1)")
            assert (body["algorithm"], body["baselines"]) == (method.name, list(method.baselines))
            config = method.parse_config({**body["config"], "testbed": body["preset"]})
            assert config.model_dump(mode="json") == method.defaults(), method.name
        assert page.evaluate("window.sentBodies.length") == len(methods)

    def test_it_shows_a_400_next_to_its_field_then_launches(self, owner_page, asgi_server,
                                                            owner, keep_online):
        page = owner_page
        keep_online(enrol_agent(asgi_server, owner, "cloud-01"))
        open_form(page, "splitfed")
        page.get_by_label("Experiment name").fill("from the form")
        page.get_by_label("rounds", exact=True).fill("0")
        page.get_by_label("Preset", exact=True).select_option("local-3")
        page.get_by_role("button", name="Launch experiment").click()

        error = page.locator('[data-error-for="config.rounds"]')
        expect(error).to_contain_text("greater than or equal to 1")
        expect(page.locator('.field.has-error[data-field="config.rounds"]')).to_be_visible()
        assert page.evaluate("document.activeElement.id") == "field-rounds"
        screenshot(page, "new-experiment-error")
        assert not Experiment.objects.exists()

        page.get_by_label("rounds", exact=True).fill("2")
        page.get_by_role("button", name="Launch experiment").click()
        expect(page).to_have_url(re.compile(rf"/experiments/{UUID}/$"))
        experiment = Experiment.objects.get()
        assert page.url.endswith(f"/experiments/{experiment.id}/")
        assert (experiment.name, experiment.methods, experiment.testbed) == (
            "from the form", ["splitfed", "fedavg"], "local-3")
        assert experiment.config["rounds"] == 2

        page.get_by_role("link", name="Experiments", exact=True).click()
        row = page.locator("tbody tr", has_text="from the form")
        expect(row.locator("td")).to_have_text(
            ["from the form", "splitfed", "splitfed, fedavg", "running", "—",
             re.compile(r"^\d+ s$"), re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")])
        screenshot(page, "experiments")


    def test_it_launches_a_distributed_run_on_the_checked_devices(self, owner_page, asgi_server,
                                                                   owner, keep_online):
        page = owner_page
        names = {"cloud-31": "a6000-server", "jetson-31": "jetson-nx", "jetson-32": "jetson-nx"}
        for name, profile in names.items():
            keep_online(enrol_agent(asgi_server, owner, name, profile))
        open_form(page, "splitfed")
        page.get_by_label("Experiment name").fill("on my devices")
        page.get_by_label("rounds", exact=True).fill("2")
        page.get_by_label("workers", exact=True).fill("2")
        page.get_by_label("fedavg").uncheck()
        page.get_by_label("My registered devices").check()
        for name in names:
            page.locator("#devices label", has_text=name).locator("input").check()
        page.get_by_label("Execution").select_option("distributed")
        page.get_by_role("button", name="Launch experiment").click()

        expect(page).to_have_url(re.compile(rf"/experiments/{UUID}/$"))
        experiment = Experiment.objects.get()
        assert (experiment.execution, experiment.methods) == ("distributed", ["splitfed"])
        (run,) = experiment.runs.all()
        placed = {slot["name"]: slot for slot in run.placement}
        assert set(placed) == set(names)
        assert placed["cloud-31"]["role"] == "coordinator"
        assert sorted(w for n in ("jetson-31", "jetson-32") for w in placed[n]["workers"]) == \
            [0, 1]
        table = page.locator(".placement-table")
        for name in names:
            expect(table.locator("td", has_text=name)).to_be_visible()
        screenshot(page, "distributed-experiment")

class TestExperimentPage:
    def test_it_extends_the_charts_live(self, owner_page, asgi_server, owner, keep_online):
        page = owner_page
        agent = keep_online(enrol_agent(asgi_server, owner, "cloud-02"))
        experiment = launch(asgi_server, owner, agent, name="live", algorithm="splitfed",
                            baselines=["fedavg"], preset="local-3", config={"rounds": 3})
        split, fed = experiment["runs"]
        page.goto(f"/experiments/{experiment['id']}/")
        expect(page.locator("#live-state")).to_have_text("Live")
        expect(page.locator(".chart")).to_have_count(0)
        page.evaluate("window.sameDocument = true")  # gone if the page reloads

        agent.start(split["job"]["id"])
        split_card = page.locator(f'.run-card[data-run-id="{split["id"]}"]')
        expect(split_card.locator(".badge")).to_have_text("running")
        expect(split_card).to_contain_text("on cloud-02")
        expect(split_card).to_contain_text("code git:0123456789")

        agent.report(split["id"], [("accuracy", 0, 0.3, 1.5), ("accuracy", 1, 0.6, 3.0),
                                   ("traffic_bytes", 1, 2e6, 3.0)])
        agent.report(fed["id"], [("accuracy", 0, 0.2, 2.5)])
        wait_for_trace_lengths(page, "accuracy", [2, 1])
        wait_for_trace_lengths(page, "traffic_bytes", [1, 0])

        agent.report(split["id"], [("accuracy", 2, 0.8, 4.5), ("round_time_s", 2, 1.5, 4.5)])
        wait_for_trace_lengths(page, "accuracy", [3, 1])
        # A retried batch is accepted again but stored and drawn once.
        assert agent.report(split["id"], [("accuracy", 2, 0.8, 4.5)]) == 1
        agent.report(fed["id"], [("accuracy", 1, 0.4, 5.0)])
        wait_for_trace_lengths(page, "accuracy", [3, 2])
        assert page.evaluate("window.sameDocument") is True
        assert page.evaluate("[...document.querySelectorAll('.chart')].map(c => c.dataset.metric)"
                             ) == ["accuracy", "traffic_bytes", "round_time_s"]
        assert page.evaluate(
            "document.querySelector('.chart[data-metric=accuracy]').data.map(t => t.name)"
        ) == ["splitfed", "fedavg"]

        page.get_by_label("x-axis").select_option("sim_time_s")
        assert page.evaluate(
            "document.querySelector('.chart[data-metric=accuracy]').data[0].x"
        ) == [1.5, 3.0, 4.5]

        agent.log(split["id"], ["round 2: accuracy 0.80"])
        expect(page.locator("#logs")).to_contain_text("[splitfed] round 2: accuracy 0.80")
        screenshot(page, "experiment")

        page.get_by_role("button", name="Cancel", exact=True).click()
        page.get_by_role("button", name="Cancel the experiment").click()
        expect(page.locator("#experiment-status")).to_have_text("cancelled")
        expect(split_card.locator(".badge")).to_have_text("cancelled")
        expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_disabled()
        assert Experiment.objects.get(pk=experiment["id"]).status == "cancelled"

        # Rerun: a new experiment, whose page links this one.
        page.get_by_role("button", name="Rerun").click()
        expect(page.locator("#rerun-of")).to_contain_text("Rerun of live")
        rerun = Experiment.objects.get(rerun_of_id=experiment["id"])
        assert page.url.endswith(f"/experiments/{rerun.id}/")
        assert rerun.methods == ["splitfed", "fedavg"]

    def test_a_stalled_page_is_closed_for_falling_behind_and_resumes_live(
            self, owner_page, asgi_server, owner, keep_online):
        """The page's script stops (a busy tab) while the run reports ~1.3 MB of points: the
        server, seeing no acknowledgement, stops at its 1 MiB bound, waits for the page to
        catch up (CATCH_UP_S) and, once the page has processed and acknowledged what it was
        sent, closes with 4008. The page reconnects and its chart, rebuilt from the history,
        reaches the last step; then it keeps going live."""
        page = owner_page
        agent = keep_online(enrol_agent(asgi_server, owner, "cloud-05"))
        experiment = launch(asgi_server, owner, agent, name="stalled", algorithm="fedavg",
                            preset="local-3", config={"rounds": 3})
        run = experiment["runs"][0]
        sockets = []
        page.on("websocket", lambda socket: sockets.append(socket.url))
        page.goto(f"/experiments/{experiment['id']}/")
        expect(page.locator("#live-state")).to_have_text("Live")
        page.evaluate("window.sameDocument = true")  # gone if the page reloads
        agent.start(run["job"]["id"])
        agent.report(run["id"], [("accuracy", 0, 0.1, 0.5)])
        wait_for_trace_lengths(page, "accuracy", [1])

        # The script blocks (no socket message is handled) until the last of 6 batches of
        # 5,000 points (~225 kB each) is stored: it polls the API with synchronous requests.
        last = 6 * 5000
        page.evaluate("""(url) => setTimeout(() => {
            for (;;) {
              const request = new XMLHttpRequest();
              request.open("GET", url, false);
              request.send();
              if (JSON.parse(request.responseText).points.length) return;
              const until = performance.now() + 100;
              while (performance.now() < until);
            }
          }, 0)""", f"/api/v1/runs/{run['id']}/metrics/?name=accuracy&from_step={last}"
                      f"&to_step={last}")
        step = 1
        for _ in range(6):
            agent.report(run["id"], [("accuracy", s, 0.5 + s * 1e-6, s * 0.5)
                                     for s in range(step, step + 5000)])
            step += 5000
        page.wait_for_function("document.querySelector('#live-state').dataset.closeCode",
                               timeout=60_000)
        code = page.evaluate("document.querySelector('#live-state').dataset.closeCode")
        assert code == "4008"
        expect(page.locator("#live-state")).to_have_text("Live", timeout=60_000)
        assert len(sockets) == 2
        # The history: 30,001 points, downsampled (min and max per bucket), the last one kept.
        last_x = ("() => { const t = document.querySelector('.chart[data-metric=accuracy]')"
                  ".data[0]; return t.x[t.x.length - 1]; }")
        page.wait_for_function(f"({last_x})() === {step - 1}")
        # The last batches were never sent live (4 of ~225 kB are as much as 1 MiB allows):
        # the chart holds what the API's downsampling of the stored series holds (same rule).
        stored = user_api(asgi_server, owner).get(
            f"{asgi_server}/api/v1/runs/{run['id']}/metrics/?name=accuracy&buckets=1000",
            timeout=30).json()
        assert stored["downsampled"] == ["accuracy"]
        assert page.evaluate("document.querySelector('.chart[data-metric=accuracy]').data[0].x"
                             ) == [point["step"] for point in stored["points"]]
        agent.report(run["id"], [("accuracy", step, 0.9, step * 0.5)])
        page.wait_for_function(f"({last_x})() === {step}")
        assert page.evaluate("window.sameDocument") is True
        screenshot(page, "experiment-after-falling-behind")

    def test_it_draws_the_history_and_links_the_api_export(self, owner_page,
                                                            reported_experiment, tmp_path):
        page = owner_page
        page.goto(f"/experiments/{reported_experiment.id}/")
        wait_for_trace_lengths(page, "accuracy", [3, 2])
        wait_for_trace_lengths(page, "loss", [1, 1])
        expect(page.locator("#logs")).to_contain_text("[fedavg] fedavg round 1 done")
        with page.expect_download() as download:
            page.get_by_role("link", name="Final values CSV").click()
        path = tmp_path / "experiment.csv"
        download.value.save_as(path)
        rows = list(csv.DictReader(path.open()))
        assert [(row["method"], row["accuracy"]) for row in rows] == [
            ("splitfed", "0.8"), ("fedavg", "0.55")]


class TestCompareAndResults:
    def test_it_compares_runs_picked_on_the_results_page(self, owner_page,
                                                          reported_experiment):
        page = owner_page
        split, fed = reported_experiment.runs.order_by("position")
        page.goto("/results/")
        page.locator(f"#pick-{fed.id}").check()
        page.locator(f"#pick-{split.id}").check()
        page.get_by_role("button", name="Compare selected runs").click()
        # The form's runs=a&runs=b becomes the canonical runs=a,b (table order).
        expect(page).to_have_url(re.compile(rf"/compare/\?runs={split.id},{fed.id}$"))
        expect(page.locator("#charts")).to_have_attribute("data-ready", "1")
        wait_for_trace_lengths(page, "accuracy", [3, 2])
        wait_for_trace_lengths(page, "loss", [1, 1])
        assert page.evaluate(
            "document.querySelector('.chart[data-metric=accuracy]').data.map(t => t.name)"
        ) == ["split vs fed · splitfed", "split vs fed · fedavg"]
        final = page.get_by_role("table", name="Final value of each metric per run").locator(
            "tbody tr")
        expect(final).to_have_count(2)
        expect(final.nth(0).locator("td")).to_have_text(
            ["split vs fed", "splitfed", "queued", "0.8", "0.6"])
        expect(final.nth(1).locator("td")).to_have_text(
            ["split vs fed", "fedavg", "queued", "0.55", "1.1"])
        screenshot(page, "compare")

    def test_it_exports_results_as_csv(self, owner_page, reported_experiment, tmp_path):
        page = owner_page
        page.goto("/results/")
        expect(page.locator("table tbody tr")).to_have_count(2)
        screenshot(page, "results")
        with page.expect_download() as download:
            page.get_by_role("link", name="Export CSV").click()
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        rows = list(csv.DictReader(path.open()))
        assert [(row["experiment_name"], row["method"], row["accuracy"], row["loss"])
                for row in rows] == [("split vs fed", "splitfed", "0.8", "0.6"),
                                     ("split vs fed", "fedavg", "0.55", "1.1")]
