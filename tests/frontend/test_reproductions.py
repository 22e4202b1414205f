"""The Reproductions page: claims and verdicts from the results JSON, plots served by name, and
each paper's headline regime accepted by the experiments API as its button sends it."""
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.devices.models import Device
from ml.reproduction import (
    cocodc,
    fedspine,
    harness,
    hat,
    hat_v2,
    imbnas,
    report,
    split_fl,
    split_fl_v2,
)
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


def test_the_page_says_when_a_sweep_was_stopped(owner, results, tmp_path):
    stopped = harness.results_document(DECLARATION, runs()[:17], mode="full", wall_s=60.0)
    harness.save(stopped, tmp_path / "toy.json")
    client = Client()
    client.force_login(owner)
    html = client.get("/reproductions/").content.decode()
    assert "Mode: full, stopped: 17 of 20 declared runs; 17 runs, 1 min" in html
    harness.save(results, tmp_path / "toy.json")
    assert "Mode: full; 20 runs, 1 min" in client.get("/reproductions/").content.decode()


#: Every tick label of an SVG plot drawn by matplotlib (text kept as text): its panel, axis,
#: text, the corners of its own box on the screen (rotated with it) and its bounding client rect.
TICK_LABELS_JS = """() => [...document.querySelectorAll(
    'g[id^="xtick_"] text, g[id^="ytick_"] text')].map((t) => {
  const b = t.getBBox(), m = t.getScreenCTM(), r = t.getBoundingClientRect();
  const corners = [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height],
                   [b.x, b.y + b.height]].map(([x, y]) => {
    const p = new DOMPoint(x, y).matrixTransform(m); return [p.x, p.y]; });
  return {panel: t.closest('g[id^="axes_"]').id,
          axis: t.closest('g[id^="xtick_"]') ? "x" : "y", text: t.textContent, corners,
          rect: [r.left, r.top, r.right, r.bottom]};
})"""


def _quads_overlap(a: list, b: list) -> bool:
    """Whether two convex quadrilaterals (corner lists) overlap (separating axis test; touching
    edges do not count)."""
    for quad in (a, b):
        for (x1, y1), (x2, y2) in zip(quad, quad[1:] + quad[:1]):
            normal = (y1 - y2, x2 - x1)
            pa = [normal[0] * x + normal[1] * y for x, y in a]
            pb = [normal[0] * x + normal[1] * y for x, y in b]
            if max(pa) <= min(pb) + 1e-6 or max(pb) <= min(pa) + 1e-6:
                return False
    return True


def _effect_plot_svg(document: dict) -> str:
    import io

    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # tick labels stay <text>
        fig = report.effects_figure(document)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        report._pyplot().close(fig)
    return buffer.getvalue()


@pytest.mark.browser
@pytest.mark.parametrize("source", ["wide-range toy", "hat_v2"])
def test_effect_plot_tick_labels_never_overlap_in_the_browser(browser, source):
    """The effect plot of a ratio spanning many decades (constructed, and HAT v2's committed
    results: 0.006x to 2x), drawn in Chromium: no two tick labels of a panel overlap."""
    from tests.frontend.conftest import screenshot
    from tests.ml.reproduction.test_effect_plots import wide_document

    folder = Path(__file__).resolve().parents[2] / "docs" / "reproductions"
    document = wide_document() if source != "hat_v2" else harness.load(folder / "hat_v2.json")
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    try:
        page.set_content(f"<!doctype html><body style='margin:0'>{_effect_plot_svg(document)}"
                         "</body>")
        labels = page.evaluate(TICK_LABELS_JS)
        screenshot(page, f"reproduction-effects-{source.replace(' ', '-')}")
    finally:
        page.close()
    panels = {(label["panel"], label["axis"]) for label in labels}
    assert {axis for _, axis in panels} == {"x", "y"}
    for panel, axis in panels:
        drawn = [label for label in labels if (label["panel"], label["axis"]) == (panel, axis)]
        if axis == "y":
            assert len(drawn) >= 3, drawn  # the axis stays labelled
        for i, one in enumerate(drawn):
            for other in drawn[i + 1:]:
                assert not _quads_overlap(one["corners"], other["corners"]), (one, other)
                if axis == "y":  # horizontal text: its bounding client rect is its box
                    (l1, t1, r1, b1), (l2, t2, r2, b2) = one["rect"], other["rect"]
                    assert not (l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1), (one, other)
