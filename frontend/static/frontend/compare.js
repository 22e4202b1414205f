// Compare page: any runs side by side, a chart per metric with one trace per run.
import { api } from "./api.js";
import { ChartBoard } from "./charts.js";
import { bindControls, viewFromUrl } from "./controls.js";

const page = JSON.parse(document.getElementById("compare-data").textContent);
const traces = page.runs.map((run) => ({ key: run.id, name: run.label }));
const board = new ChartBoard(document.getElementById("charts"), traces, {
  legend: document.getElementById("legend"),
  catalogue: page.metric_catalogue,
  view: viewFromUrl(traces),
});
bindControls(board, () => traces);

/** A point as the WebSocket sends it: [name, step, value, sim_time_s, wall_time_s]. */
function asTuple(point) {
  if (Array.isArray(point)) return point;
  return [point.name, point.step, point.value, point.sim_time_s, point.wall_time_s];
}

/** Every point of one run from GET /api/v1/runs/<id>/metrics/ (plain or paginated answers). */
async function runPoints(url) {
  const points = [];
  let next = url;
  while (next) {
    const answer = await api(next);
    const items = Array.isArray(answer) ? answer : answer.points || answer.results || [];
    points.push(...items.map(asTuple));
    next = Array.isArray(answer) ? null : answer.next || null;
  }
  return points;
}

async function start() {
  const status = document.getElementById("load-state");
  try {
    const series = await Promise.all(page.runs.map((run) => runPoints(run.metrics_url)));
    const pointsByKey = Object.fromEntries(page.runs.map((run, index) => [run.id, series[index]]));
    board.reset(traces, pointsByKey);
    status.textContent = "";
    status.hidden = true;
  } catch (error) {
    status.textContent = `Could not load metrics: ${error.message}`;
    status.className = "alert error";
  }
  document.getElementById("charts").dataset.ready = "1";
}

start();
