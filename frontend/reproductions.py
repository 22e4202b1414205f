"""The Reproductions page: each paper's claims, latest verdicts and plots, read from the results
JSON that ``bench/reproduce_<paper>.py`` writes (``docs/reproductions/<key>.json``), and the
headline regime of each as an experiment to launch (through the experiments API, in the page's
module). Results a newer declaration supersedes are left out (docs/reproductions.md keeps them,
marked); a declaration that extends another (more regimes under its rules) follows it, marked.

The folder is ``settings.ESTUARY_REPRODUCTIONS_DIR`` when set, else the checkout's
``docs/reproductions``. Plots are served from it by name (only ``*.png`` names listed in a
results file).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from controlplane.devices.queries import devices_for
from frontend.page_urls import experiment_url_template
from ml.reproduction.harness import extensions, mode_text, supersessions
from ml.testbed.presets import PRESETS

PLOT_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.png$")
VERDICT_BADGE = {"holds": "succeeded", "weaker": "queued", "not shown": "cancelled",
                 "reversed": "failed"}


def results_dir() -> Path:
    configured = getattr(settings, "ESTUARY_REPRODUCTIONS_DIR", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "docs" / "reproductions"


def _documents() -> list[dict]:
    """Every readable results file, in name order (a broken file is skipped, not a 500)."""
    documents = []
    for path in sorted(results_dir().glob("*.json")):
        try:
            documents.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return documents


def _paper(document: dict) -> dict:
    """What the page shows of one results file."""
    decl = document["declaration"]
    labels = {r["key"]: r["label"] for r in decl["regimes"]}
    summaries = document["evaluation"]["claims"]
    claims = []
    for claim in decl["claims"]:
        summary = summaries.get(claim["key"], {})
        headline = summary.get("headline_verdict")
        closest = summary.get("closest_regime")
        claims.append({
            "key": claim["key"], "text": claim["text"],
            "headline_verdict": headline or "not run",
            "headline_badge": VERDICT_BADGE.get(headline, "cancelled"),
            "closest_regime": labels.get(closest, closest),
            "closest_verdict": summary.get("closest_verdict"),
            "closest_badge": VERDICT_BADGE.get(summary.get("closest_verdict"), "cancelled"),
        })
    return {
        "key": decl["key"], "paper": decl["paper"], "arxiv": decl["arxiv"],
        "setting": decl["setting"],
        # as it ran: "full, stopped: 42 of 60 declared runs" for a sweep stopped part-way
        "mode": mode_text(document), "finished": document["finished"],
        "runs": len(document["runs"]), "wall_min": round(document["wall_s"] / 60),
        "headline": labels.get(decl["headline"], decl["headline"]),
        # more regimes under another declaration's rules: its "headline" is its first regime
        "extends": sorted(decl.get("extends") or {}),
        "regimes_run": [labels.get(k, k) for k in document["evaluation"]["regimes"]],
        "claims": claims,
        "plots": [reverse("frontend:reproduction-plot", args=[name])
                  for name in document.get("plots", []) if PLOT_NAME.match(name)],
        "launch": decl.get("launch") or None,
    }


def _extensions_after_base(documents: list[dict]) -> list[dict]:
    """``documents`` in their order, except that each extension follows the one it extends."""
    keys = {d["declaration"]["key"] for d in documents}
    extending = {k: e["of"] for k, e in extensions(documents).items() if e["of"] in keys}
    ordered = []
    for document in documents:
        key = document["declaration"]["key"]
        if key in extending:
            continue
        ordered.append(document)
        ordered += [d for d in documents if extending.get(d["declaration"]["key"]) == key]
    return ordered


@login_required
@require_GET
def reproductions(request: HttpRequest) -> HttpResponse:
    documents = _documents()
    replaced = supersessions(documents)  # a newer declaration's verdicts are the latest
    papers = [_paper(d) for d in _extensions_after_base(
        [d for d in documents if d["declaration"]["key"] not in replaced])]
    url_template, placeholder = experiment_url_template()
    return render(request, "frontend/reproductions.html", {
        "section": "reproductions",
        "papers": papers,
        "presets": sorted(PRESETS),
        "device_count": devices_for(request.user).count(),
        "page_data": {
            "create_url": "/api/v1/experiments/",
            "devices_url": "/api/v1/devices/",
            "experiment_url_template": url_template,
            "id_placeholder": placeholder,
            "launches": {p["key"]: {**p["launch"], "name": f"{p['paper']}: {p['headline']}"}
                         for p in papers if p["launch"]},
        },
    })


@login_required
@require_GET
def reproduction_plot(request: HttpRequest, name: str) -> FileResponse:
    listed = {n for d in _documents() for n in d.get("plots", [])}
    path = results_dir() / name
    if not PLOT_NAME.match(name) or name not in listed or not path.is_file():
        raise Http404("no such plot")
    return FileResponse(path.open("rb"), content_type="image/png")
