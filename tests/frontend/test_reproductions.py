"""The Reproductions page: claims and verdicts from the results JSON, plots served by name, and
each paper's headline regime accepted by the experiments API as its button sends it."""
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.devices.models import Device
from ml.reproduction import (cocodc, fedspine, harness, hat, hat_v2, imbnas, report, split_fl,
                              split_fl_v2)
from tests.ml.reproduction.test_harness import DECLARATION, runs


@pytest.fixture
def results(tmp_path, settings):
    document = harness.results_document(DECLARATION, runs(), mode="full", wall_s=60.0)
    document["plots"] = report.write_plots(document, tmp_path)
    harness.save(document, tmp_path / "toy.json")
    (tmp_path / "stray.png").write_bytes(b"\x89PNG not listed")
    (tmp_path / "broken.json").write_text("{not json")
    settings.ESTUARY_REPRODUCTIONS_DIR = str(tmp_path)
    return document


@pytest.mark.django_db
def test_the_page_shows_each_claim_with_its_verdicts_and_plots(owner, results):
    client = Client()
    assert client.get("/reproductions/").status_code == 302  # login required
    client.force_login(owner)
    page = client.get("/reproductions/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'aria-current="page">Reproductions</a>' in html
    assert "Toy paper" in html and "A beats B by 5 points." in html
    row = html[html.index('data-claim="acc"'):html.index('data-claim="speed"')]
    assert '<span class="badge failed">reversed</span>' in row  # headline regime "hard"
    assert "easy regime: <span class=\"badge succeeded\">holds</span>" in row
    for name in results["plots"]:
        assert f"/reproductions/plots/{name}" in html
        image = client.get(f"/reproductions/plots/{name}")
        assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert client.get("/reproductions/plots/stray.png").status_code == 404
    assert client.get("/reproductions/plots/..%2Ftoy.json").status_code == 404


@pytest.mark.django_db
def test_the_page_leaves_out_superseded_results(owner, results, tmp_path):
    from dataclasses import replace

    newer = replace(DECLARATION, key="toy_v2", paper="Toy paper again", version=2,
                    supersedes={"toy": "why"})
    harness.save(harness.results_document(newer, runs(), mode="full", wall_s=1.0),
                 tmp_path / "toy_v2.json")
    client = Client()
    client.force_login(owner)
    html = client.get("/reproductions/").content.decode()
    assert 'id="reproduction-toy_v2"' in html and "Toy paper again" in html
    assert 'id="reproduction-toy"' not in html and "toy-effects.png" not in html


@pytest.mark.django_db
def test_the_page_on_the_committed_results_shows_each_latest_declaration(owner, settings):
    folder = Path(__file__).resolve().parents[2] / "docs" / "reproductions"
    settings.ESTUARY_REPRODUCTIONS_DIR = str(folder)
    documents = [harness.load(path) for path in sorted(folder.glob("*.json"))]
    replaced = harness.supersessions(documents)
    assert {"hat", "split_fl"} <= set(replaced)
    client = Client()
    client.force_login(owner)
    html = client.get("/reproductions/").content.decode()
    for document in documents:
        key = document["declaration"]["key"]
        assert (f'id="reproduction-{key}"' in html) == (key not in replaced), key
    for key, by in replaced.items():
        assert f'id="reproduction-{by["by"]}"' in html, key


@pytest.mark.django_db
def test_an_extension_follows_the_declaration_it_extends(owner, results, tmp_path):
    from dataclasses import replace

    more = replace(DECLARATION, key="toy_more", paper="Toy paper, more regimes", launch={},
                   extends={"toy": "two more regimes"})
    harness.save(harness.results_document(more, runs(), mode="full", wall_s=1.0),
                 tmp_path / "a_toy_more.json")  # sorts first by name
    client = Client()
    client.force_login(owner)
    html = client.get("/reproductions/").content.decode()
    base, extension = html.index('id="reproduction-toy"'), html.index('id="reproduction-toy_more"')
    assert base < extension
    card = html[extension:]
    assert "More regimes under the rules of <code>toy</code>" in card
    assert "First regime (hard regime)" in card and 'data-key="toy_more"' not in card


@pytest.mark.django_db
def test_the_page_without_results_says_how_to_make_them(owner, tmp_path, settings):
    settings.ESTUARY_REPRODUCTIONS_DIR = str(tmp_path)
    client = Client()
    client.force_login(owner)
    assert 'id="no-reproductions"' in client.get("/reproductions/").content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("declaration", [split_fl.DECLARATION, split_fl_v2.DECLARATION,
                                         imbnas.DECLARATION, hat.DECLARATION,
                                         hat_v2.DECLARATION,
                                         cocodc.DECLARATION, fedspine.DECLARATION])
def test_each_headline_launch_is_a_valid_experiment(api, owner, device_factory, declaration):
    host = device_factory(owner).device

    def online() -> None:  # a heartbeat: on a loaded machine the first POST can outlast 3 s
        Device.objects.filter(pk=host.pk).update(last_seen=timezone.now())

    online()
    launch = declaration.launch
    body = {"name": declaration.paper, "algorithm": launch["algorithm"],
            "baselines": launch["baselines"], "config": launch["config"]}
    response = api(owner).post("/api/v1/experiments/", body, format="json")
    assert response.status_code == 201, response.json()
    methods = [run["method"] for run in response.json()["runs"]]
    assert methods == [launch["algorithm"], *launch["baselines"]]
    # the same regime on a preset instead of the declared testbed
    preset = {**body, "config": {k: v for k, v in launch["config"].items() if k != "testbed"},
              "preset": "jetson80"}
    online()
    second = api(owner).post("/api/v1/experiments/", preset, format="json")
    assert second.status_code == 201, second.json()
