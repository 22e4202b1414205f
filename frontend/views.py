"""Dashboard pages. Each view reads through the control plane's scoping helpers
(``devices_for``, ``experiments_for``, ``runs_for``) and leaves changes to the REST API,
which the pages' ES modules call with the session and CSRF token."""
from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from controlplane.csv_tables import write_csv
from controlplane.devices.queries import devices_for
from controlplane.devices.serializers import DeviceSerializer
from controlplane.experiments.models import Experiment
from controlplane.experiments.queries import experiments_for, runs_for
from controlplane.experiments.results import duration_s, main_metrics
from controlplane.experiments.serializers import code_version_differs
from controlplane.experiments.views import EXPERIMENT_ORDERINGS, ExperimentQuerySerializer
from frontend import tables
from frontend.page_urls import experiment_url_template
from ml import metrics_catalogue, registry
from ml.metrics_catalogue import describe
from ml.testbed.presets import PRESETS
from ml.testbed.profiles import PROFILES

#: The contract's API and WebSocket paths (docs/architecture.md).
API = "/api/v1"
MAX_COMPARED_RUNS = 20



@login_required
@require_GET
def devices(request: HttpRequest) -> HttpResponse:
    interval_s = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
    return render(request, "frontend/devices.html", {
        "section": "devices",
        "devices": DeviceSerializer(devices_for(request.user).order_by("name"), many=True).data,
        # Edge profiles first: most devices an agent enrols are edge devices.
        "profiles": sorted(PROFILES.values(), key=lambda p: (p.kind != "edge", p.name)),
        "refresh_s": interval_s,
        "page_data": {
            "devices_url": f"{API}/devices/",
            "enrolment_tokens_url": f"{API}/enrolment-tokens/",
            "refresh_ms": interval_s * 1000,
        },
    })


#: Experiments per page of the experiments and results lists.
LIST_PAGE_SIZE = 25
#: Query parameters of the lists' filter form (the API's names, ExperimentQuerySerializer).
LIST_FILTERS = ("search", "status", "method", "created_after", "created_before", "ordering")


def _filtered_experiments(request: HttpRequest) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """The user's experiments filtered, sorted and paged as the API's list does (its query
    serializer), the page, and the errors of bad parameters (then nothing is filtered)."""
    params = {key: value for key, value in request.GET.items()
              if key in LIST_FILTERS and value != ""}
    query = ExperimentQuerySerializer(data=params)
    errors: dict[str, str] = {}
    if query.is_valid():
        filters = dict(query.validated_data)
    else:
        errors = {key: " ".join(str(m) for m in messages)
                  for key, messages in query.errors.items()}
        filters = {}
    queryset = query.apply(experiments_for(request.user), filters)
    page = Paginator(queryset, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    return page, filters, errors


def _list_context(request: HttpRequest, page, filters: dict[str, Any],
                  errors: dict[str, str]) -> dict[str, Any]:
    """What the filter form, the sortable headers and the pager of a list need."""
    current = {key: request.GET.get(key, "") for key in LIST_FILTERS}
    ordering = filters.get("ordering", "-created")

    def with_params(**changes: Any) -> str:
        params = {key: value for key, value in {**current, **changes}.items() if value}
        return f"?{urlencode(params)}" if params else "?"

    def sort_link(key: str) -> dict[str, str]:
        descending_first = key in ("created", "duration")
        if ordering.lstrip("-") == key:
            target = key if ordering.startswith("-") else f"-{key}"
            state = "descending" if ordering.startswith("-") else "ascending"
        else:
            target, state = (f"-{key}" if descending_first else key), "none"
        return {"url": with_params(ordering=target, page=""), "sort": state}

    return {
        "page": page, "filters": current, "errors": errors,
        "statuses": [choice for choice, _ in Experiment.Status.choices],
        "methods": [method.name for method in registry.all_methods()],
        "sort": {key: sort_link(key) for key in EXPERIMENT_ORDERINGS},
        "previous_url": with_params(page=page.previous_page_number())
        if page.has_previous() else "",
        "next_url": with_params(page=page.next_page_number()) if page.has_next() else "",
        "filtered": any(current[key] for key in LIST_FILTERS if key != "ordering"),
    }


@login_required
@require_GET
def experiments(request: HttpRequest) -> HttpResponse:
    page, filters, errors = _filtered_experiments(request)
    shown = list(page.object_list)
    main = main_metrics([experiment.id for experiment in shown])
    now = timezone.now()
    rows = []
    for experiment in shown:
        metric = main.get(experiment.id)
        info = describe(metric[0]) if metric else None
        rows.append({"experiment": experiment, "duration_s": duration_s(experiment, now),
                     "main_label": info.label if info else "",
                     "main_value": metric[1] if metric else None,
                     "main_unit": info.unit if info else ""})
    return render(request, "frontend/experiments.html", {
        "section": "experiments", "rows": rows, **_list_context(request, page, filters, errors),
    }, status=400 if errors else 200)


@login_required
@require_GET
def new_experiment(request: HttpRequest) -> HttpResponse:
    url_template, placeholder = experiment_url_template()
    return render(request, "frontend/new_experiment.html", {
        "section": "experiments",
        "presets": sorted(PRESETS),
        "page_data": {
            "algorithms_url": f"{API}/algorithms/",
            "devices_url": f"{API}/devices/",
            "create_url": f"{API}/experiments/",
            "experiment_url_template": url_template,
            "id_placeholder": placeholder,
            "initial_algorithm": request.GET.get("algorithm", ""),
        },
    })


@login_required
@require_GET
def experiment(request: HttpRequest, experiment_id: uuid.UUID) -> HttpResponse:
    experiment = get_object_or_404(experiments_for(request.user), pk=experiment_id)
    runs = list(experiment.runs.order_by("position"))
    testbed = experiment.testbed
    results_url = f"{API}/experiments/{experiment.id}/results/"
    original = experiment.rerun_of
    return render(request, "frontend/experiment.html", {
        "section": "experiments",
        "experiment": experiment,
        # A rerun links its original only while the user can still see it.
        "original": original if original is not None and original.owner_id == request.user.id
        else None,
        "code_version_differs": code_version_differs(experiment),
        "baselines": experiment.methods[1:],
        "testbed_label": testbed if isinstance(testbed, str) else f"{len(testbed)} devices",
        "runs": runs,
        "run_ids": [str(run.id) for run in runs],
        "results_csv_url": f"{results_url}?format=csv",
        "results_json_url": f"{results_url}?format=json",
        "points_url": f"{API}/experiments/{experiment.id}/points/",
        "config_rows": tables.config_rows(experiment.config),
        "page_data": {
            "id": str(experiment.id),
            "algorithm": experiment.algorithm,
            "runs": [{"id": str(run.id), "method": run.method} for run in runs],
            "run_url_template": f"{API}/runs/{uuid.UUID(int=0)}/",
            "id_placeholder": str(uuid.UUID(int=0)),
            "metric_catalogue": metrics_catalogue.as_json(),
            "ws_path": f"/ws/experiments/{experiment.id}/",
            "cancel_url": f"{API}/experiments/{experiment.id}/cancel/",
            "rerun_url": f"{API}/experiments/{experiment.id}/rerun/",
        },
    })


def _requested_run_ids(request: HttpRequest) -> list[uuid.UUID]:
    """``?runs=a,b`` (or ``?runs=a&runs=b`` from the results form), in order, without repeats."""
    ids: list[uuid.UUID] = []
    for value in request.GET.getlist("runs"):
        for part in value.split(","):
            if part.strip():
                run_id = uuid.UUID(part.strip())  # ValueError on a malformed id
                if run_id not in ids:
                    ids.append(run_id)
    return ids


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    if len(request.GET.getlist("runs")) > 1:  # the results form: canonical ?runs=a,b
        query = urlencode({"runs": ",".join(request.GET.getlist("runs"))}, safe=",")
        return redirect(f"{reverse('frontend:compare')}?{query}")
    try:
        run_ids = _requested_run_ids(request)
    except ValueError:
        return render(request, "frontend/compare.html", {
            "section": "results", "error": "runs must be a comma-separated list of run ids."},
            status=400)
    if len(run_ids) > MAX_COMPARED_RUNS:
        return render(request, "frontend/compare.html", {
            "section": "results", "error": f"Compare at most {MAX_COMPARED_RUNS} runs at once."},
            status=400)
    runs = {run.id: run for run in runs_for(request.user).filter(id__in=run_ids)
            .select_related("experiment")}
    if len(runs) != len(run_ids):
        raise Http404("No such run.")
    experiments = {run.experiment_id: run.experiment for run in runs.values()}
    by_id = {row.id: row for row in tables.run_rows(experiments.values())}
    rows = [by_id[run_id] for run_id in run_ids]
    metrics = tables.metric_names(rows, per_entity=False)
    ordered = [runs[run_id] for run_id in run_ids]
    return render(request, "frontend/compare.html", {
        "section": "results",
        "runs": tables.as_table(rows, metrics),
        "metrics": metrics,
        "metric_labels": tables.metric_labels(metrics),
        "config_diff": tables.config_difference(
            [f"{run.experiment.name} · {run.method}" for run in ordered],
            [run.config for run in ordered]),
        "page_data": {"metric_catalogue": metrics_catalogue.as_json(), "runs": [{
            "id": str(row.id),
            "label": f"{row.experiment_name} · {row.method}",
            "metrics_url": f"{API}/runs/{row.id}/metrics/",
        } for row in rows]},
    })


@login_required
@require_GET
def results(request: HttpRequest) -> HttpResponse:
    page, filters, errors = _filtered_experiments(request)
    rows = tables.run_rows(page.object_list)
    metrics = tables.metric_names(rows, per_entity=False)
    return render(request, "frontend/results.html", {
        "section": "results", "rows": tables.as_table(rows, metrics), "metrics": metrics,
        "metric_labels": tables.metric_labels(metrics),
        **_list_context(request, page, filters, errors)}, status=400 if errors else 200)


@login_required
@require_GET
def results_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """Every run of the user's experiments with the final value of each metric, as CSV or
    JSON. (One experiment's results come from the API: ``/api/v1/experiments/<id>/results/``.)"""
    if fmt not in ("csv", "json"):
        return HttpResponseBadRequest("format must be csv or json", content_type="text/plain")
    rows = tables.run_rows(experiments_for(request.user).order_by("-created"))
    metrics = tables.metric_names(rows, per_entity=True)
    filename = f"estuary-results.{fmt}"
    if fmt == "json":
        body = {"metrics": metrics, "runs": [{
            "experiment": str(row.experiment_id), "experiment_name": row.experiment_name,
            "algorithm": row.algorithm, "run": str(row.id), "method": row.method,
            "state": row.state, "final": row.final} for row in rows]}
        response = HttpResponse(json.dumps(body, indent=1), content_type="application/json")
    else:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        write_csv(response, [
            ["experiment", "experiment_name", "algorithm", "run", "method", "state", *metrics],
            *([row.experiment_id, row.experiment_name, row.algorithm, row.id, row.method,
               row.state, *("" if value is None else value for value in row.values(metrics))]
              for row in rows)])
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
