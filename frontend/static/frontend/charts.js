// Metric charts: one plotly chart per metric, one trace per run, shared x-axis choice.
// Plotly is the classic script served from the plotly package's bundle (window.Plotly).
import { followZoom } from "./history_zoom.js";

/** Metrics drawn first, in this order; any other metric follows alphabetically. */
const PREFERRED_ORDER = [
  "accuracy", "loss", "perplexity", "traffic_bytes", "round_time_s", "ttft_ms", "tbt_ms", "memory_bytes",
];

/** Chart titles and y-axis formats of the standard metrics. */
const METRIC_INFO = {
  accuracy: { title: "Accuracy", tickformat: ".0%" },
  loss: { title: "Loss" },
  perplexity: { title: "Perplexity" },
  traffic_bytes: { title: "Traffic (cumulative bytes)", tickformat: ".3~s", rangemode: "tozero" },
  round_time_s: { title: "Round latency (s)" },
  ttft_ms: { title: "Time to first token (ms)" },
  tbt_ms: { title: "Time between tokens (ms)" },
  memory_bytes: { title: "Memory (bytes)", tickformat: ".3~s", rangemode: "tozero" },
};

/** Point fields: a point is [name, step, value, sim_time_s, wall_time_s]. */
export const X_AXES = {
  step: { index: 1, title: "Step (round)" },
  sim_time_s: { index: 3, title: "Emulated time (s)" },
  wall_time_s: { index: 4, title: "Wall time (s)" },
};

/** Colours of traces, by run position (the method first, then its baselines). */
export const PALETTE = ["#1b6fb8", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#0b7285", "#e67700", "#495057"];

/** Whether a metric gets its own chart: per-entity series ("name/worker-03") and clocks do not. */
export function isCharted(metric) {
  return !metric.includes("/") && metric !== "sim_time_s" && metric !== "wall_time_s";
}

function metricOrder(a, b) {
  const ia = PREFERRED_ORDER.indexOf(a);
  const ib = PREFERRED_ORDER.indexOf(b);
  if (ia !== -1 || ib !== -1) return (ia === -1 ? Infinity : ia) - (ib === -1 ? Infinity : ib);
  return a.localeCompare(b);
}

/**
 * A set of charts in `container`. Traces are given up front as [{key, name}] (key: run id), so a
 * trace's index is its run's position and new points extend it in place.
 */
export class ChartBoard {
  constructor(container, traces, { xAxis = "step" } = {}) {
    this.container = container;
    this.traces = traces;
    this.xAxis = xAxis;
    this.series = new Map(); // run key -> metric -> {points: [[...]], steps: Set}
    this.charts = new Map(); // metric -> div
  }

  /** Forget every point and draw `pointsByKey` ({run key: [point, ...]}) from scratch. */
  reset(traces, pointsByKey) {
    this.traces = traces;
    this.series.clear();
    for (const div of this.charts.values()) {
      window.Plotly.purge(div);
      div.remove();
    }
    this.charts.clear();
    for (const [key, points] of Object.entries(pointsByKey || {})) this.store(key, points);
    for (const metric of this.metrics()) this.draw(metric);
    this.updateEmptyNote();
  }

  /** Add points of run `key` and extend its traces in place (redraw a chart if order broke). */
  add(key, points) {
    const { fresh, reordered } = this.store(key, points);
    const traceIndex = this.traces.findIndex((trace) => trace.key === key);
    for (const [metric, added] of fresh) {
      if (!this.charts.has(metric) || reordered.has(metric) || traceIndex === -1) {
        this.draw(metric);
        continue;
      }
      const xi = X_AXES[this.xAxis].index;
      window.Plotly.extendTraces(
        this.charts.get(metric),
        { x: [added.map((p) => p[xi])], y: [added.map((p) => p[2])] },
        [traceIndex],
      );
    }
    this.updateEmptyNote();
  }

  /** Switch the x-axis to "step", "sim_time_s" or "wall_time_s" and redraw. */
  setXAxis(xAxis) {
    this.xAxis = xAxis;
    for (const metric of this.charts.keys()) this.draw(metric);
  }

  /** The metrics that have points, in display order. */
  metrics() {
    const names = new Set();
    for (const byMetric of this.series.values()) for (const name of byMetric.keys()) names.add(name);
    return [...names].filter(isCharted).sort(metricOrder);
  }

  store(key, points) {
    if (!this.series.has(key)) this.series.set(key, new Map());
    const byMetric = this.series.get(key);
    const fresh = new Map();
    const reordered = new Set();
    for (const point of points) {
      const [metric, step] = point;
      if (!byMetric.has(metric)) byMetric.set(metric, { points: [], steps: new Set() });
      const series = byMetric.get(metric);
      if (series.steps.has(step)) continue; // a retried batch: ingestion is idempotent, so are we
      series.steps.add(step);
      const last = series.points[series.points.length - 1];
      series.points.push(point);
      if (last && step < last[1]) {
        series.points.sort((p, q) => p[1] - q[1]);
        reordered.add(metric);
      }
      if (!fresh.has(metric)) fresh.set(metric, []);
      fresh.get(metric).push(point);
    }
    return { fresh, reordered };
  }

  draw(metric) {
    if (!isCharted(metric)) return;
    const div = this.chartDiv(metric);
    const xi = X_AXES[this.xAxis].index;
    const data = this.traces.map((trace, index) => {
      const points = this.series.get(trace.key)?.get(metric)?.points || [];
      return {
        type: "scatter",
        mode: "lines+markers",
        name: trace.name,
        x: points.map((p) => p[xi]),
        y: points.map((p) => p[2]),
        line: { color: PALETTE[index % PALETTE.length], width: 2 },
        marker: { size: 5 },
      };
    });
    const info = METRIC_INFO[metric] || { title: metric };
    const layout = {
      height: 340,
      title: { text: info.title, font: { size: 15 }, x: 0.02, xanchor: "left", y: 0.96 },
      margin: { l: 60, r: 20, t: 64, b: 50 },
      xaxis: { title: { text: X_AXES[this.xAxis].title }, zeroline: false },
      yaxis: { tickformat: info.tickformat || "", rangemode: info.rangemode || "normal", zeroline: false },
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom" },
      uirevision: `${metric}:${this.xAxis}`,
      font: { family: "system-ui, sans-serif", size: 12 },
    };
    window.Plotly.react(div, data, layout, { responsive: true, displaylogo: false });
    div.unfollowZoom ??= followZoom(div, {
      runs: () => this.traces.map((trace) => trace.key), metric, xAxis: () => this.xAxis,
      restore: () => this.draw(metric),
    });
  }

  chartDiv(metric) {
    if (this.charts.has(metric)) return this.charts.get(metric);
    const div = document.createElement("div");
    div.className = "chart";
    div.dataset.metric = metric;
    div.setAttribute("role", "img");
    div.setAttribute("aria-label", `Chart of ${metric} per run`);
    // Keep the charts in display order whatever order their first points arrive in.
    const after = [...this.charts.keys()].filter((m) => metricOrder(m, metric) < 0).sort(metricOrder).pop();
    const before = [...this.charts.keys()].filter((m) => metricOrder(m, metric) > 0).sort(metricOrder)[0];
    if (before !== undefined) this.container.insertBefore(div, this.charts.get(before));
    else if (after !== undefined) this.charts.get(after).after(div);
    else this.container.appendChild(div);
    this.charts.set(metric, div);
    return div;
  }

  updateEmptyNote() {
    let note = this.container.querySelector(".empty");
    if (this.charts.size === 0) {
      if (!note) {
        note = document.createElement("p");
        note.className = "empty";
        note.textContent = "No metric points yet; charts appear as soon as the first points arrive.";
        this.container.appendChild(note);
      }
    } else if (note) {
      note.remove();
    }
  }
}

/** Wire a <select> of x-axes to a board. */
export function bindXAxisSelect(select, board) {
  select.value = board.xAxis;
  select.addEventListener("change", () => board.setXAxis(select.value));
}
