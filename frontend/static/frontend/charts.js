// Metric charts: one plotly chart per metric (per-entity series "name/entity" share one chart
// with an entity selector), one trace per run, and one view (x axis, smoothing, log scale,
// hidden runs) shared by every chart of the page. Titles, units and descriptions come from the
// metric catalogue (ml/metrics_catalogue.py). Plotly is the classic script served from the
// plotly package's bundle (window.Plotly).
import { axisScale, axisTitle, describeMetric, ema, niceStep, roundSig } from "./format.js";

/** Metrics drawn first, in this order; any other metric follows alphabetically. */
const PREFERRED_ORDER = [
  "accuracy", "loss", "perplexity", "traffic_bytes", "round_time_s", "ttft_ms", "tbt_ms", "memory_bytes",
];

/** Point fields: a point is [name, step, value, sim_time_s, wall_time_s]. */
export const X_AXES = {
  step: { index: 1, title: "Step (round)" },
  sim_time_s: { index: 3, title: "Emulated time" },
  wall_time_s: { index: 4, title: "Wall time" },
};

/** Colours of traces, by run position (the method first, then its baselines). */
export const PALETTE = ["#1b6fb8", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#0b7285", "#e67700", "#495057"];

/**
 * Plotly's options for every chart: an offline tool offers no cloud (no logo linking
 * plotly.com, no "Share chart" upload to Plotly Cloud), and keeps only the modebar buttons a
 * reader uses. (plotly.js 4 has no showLink or Chart Studio options left to turn off.)
 */
export const PLOTLY_CONFIG = Object.freeze({
  responsive: true,
  displaylogo: false,
  showSendToCloud: false,
  modeBarButtonsToRemove: ["sendChartToCloud", "sendDataToCloud", "lasso2d", "select2d",
    "toggleSpikelines", "hoverClosestCartesian", "hoverCompareCartesian"],
  toImageButtonOptions: { format: "png", scale: 2 },
});

/** A view shared by the charts of a page (and kept in its URL by controls.js). */
export function defaultView() {
  return { xAxis: "step", smoothing: 0, logY: false, hidden: new Set(), entities: {} };
}

/** The chart a metric is drawn in: its own name, or "prefix/" for a per-entity series. */
export function chartKey(metric) {
  const slash = metric.indexOf("/");
  return slash === -1 ? metric : metric.slice(0, slash + 1);
}

/** Whether a metric is charted at all: the clocks are x axes, not charts. */
export function isCharted(metric) {
  return metric !== "sim_time_s" && metric !== "wall_time_s";
}

function keyOrder(a, b) {
  const base = (key) => key.replace(/\/$/, "");
  const [ba, bb] = [base(a), base(b)];
  if (ba === bb) return a.length - b.length; // a metric before its per-entity chart
  const ia = PREFERRED_ORDER.indexOf(ba);
  const ib = PREFERRED_ORDER.indexOf(bb);
  if (ia !== -1 || ib !== -1) return (ia === -1 ? Infinity : ia) - (ib === -1 ? Infinity : ib);
  return ba.localeCompare(bb);
}

function finiteExtent(values) {
  let min = Infinity;
  let max = -Infinity;
  for (const value of values) {
    if (Number.isFinite(value)) {
      if (value < min) min = value;
      if (value > max) max = value;
    }
  }
  return min <= max ? [min, max] : null;
}

/**
 * A y range for values whose spread is float noise (a constant 0.32224428714666 s drawn with
 * 15-digit jumps): centred on them, ±10%. Otherwise null (plotly's autorange).
 */
export function flatRange(extent) {
  if (!extent) return null;
  const [min, max] = extent;
  const magnitude = Math.max(Math.abs(min), Math.abs(max));
  if (max - min > magnitude * 1e-5) return null;
  const centre = (min + max) / 2;
  const pad = magnitude > 0 ? magnitude * 0.1 : 1;
  return [centre - pad, centre + pad];
}

/**
 * A set of charts in `container`, with the runs' legend in `legend` (buttons that show or hide
 * a run on every chart). Traces are given as [{key, name}] (key: run id), in run order, so a
 * run keeps its colour; points arrive through reset() (history) and add() (live).
 */
export class ChartBoard {
  constructor(container, traces, { legend = null, catalogue = {}, view = defaultView(), onViewChange = null } = {}) {
    this.container = container;
    this.legend = legend;
    this.catalogue = catalogue;
    this.traces = traces;
    this.view = view;
    this.onViewChange = onViewChange;
    /** Hook for fetching a zoomed x range at full resolution: (chartKey, [x0, x1] | null). */
    this.onZoom = null;
    this.series = new Map(); // run key -> metric -> {points: [[...]], steps: Set}
    this.cards = new Map(); // chart key -> {card, plot, select}
    this.dirty = new Set();
    this.flushTimer = null;
  }

  get xAxis() {
    return this.view.xAxis;
  }

  /** Forget every point and draw `pointsByKey` ({run key: [point, ...]}) from scratch. */
  reset(traces, pointsByKey) {
    this.traces = traces;
    this.series.clear();
    for (const { card, plot } of this.cards.values()) {
      window.Plotly.purge(plot);
      card.remove();
    }
    this.cards.clear();
    for (const [key, points] of Object.entries(pointsByKey || {})) this.store(key, points);
    this.renderLegend();
    for (const key of this.chartKeys()) this.draw(key);
    this.updateEmptyNote();
  }

  /** Add points of run `key`; the charts they touch are redrawn together shortly after. */
  add(key, points) {
    for (const metric of this.store(key, points)) this.dirty.add(chartKey(metric));
    if (this.dirty.size && this.flushTimer === null) {
      this.flushTimer = setTimeout(() => this.flush(), 30);
    }
  }

  flush() {
    this.flushTimer = null;
    const keys = [...this.dirty].sort(keyOrder);
    this.dirty.clear();
    for (const key of keys) this.draw(key);
    this.updateEmptyNote();
  }

  /** Change part of the view (e.g. {xAxis: "sim_time_s"}) and redraw every chart. */
  setView(change) {
    Object.assign(this.view, change);
    this.renderLegend();
    for (const key of this.cards.keys()) this.draw(key);
    if (this.onViewChange) this.onViewChange(this.view);
  }

  /** Switch the x axis to "step", "sim_time_s" or "wall_time_s". */
  setXAxis(xAxis) {
    this.setView({ xAxis });
  }

  toggleRun(key) {
    const hidden = new Set(this.view.hidden);
    if (hidden.has(key)) hidden.delete(key);
    else hidden.add(key);
    this.setView({ hidden });
  }

  /** The chart keys that have points, in display order. */
  chartKeys() {
    const keys = new Set();
    for (const byMetric of this.series.values()) {
      for (const name of byMetric.keys()) if (isCharted(name)) keys.add(chartKey(name));
    }
    return [...keys].sort(keyOrder);
  }

  /** The entities of a per-entity chart ("prefix/"), sorted. */
  entities(key) {
    const names = new Set();
    for (const byMetric of this.series.values()) {
      for (const name of byMetric.keys()) if (name.startsWith(key)) names.add(name.slice(key.length));
    }
    return [...names].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  }

  /** Store points; returns the metrics that got new ones. */
  store(key, points) {
    if (!this.series.has(key)) this.series.set(key, new Map());
    const byMetric = this.series.get(key);
    const touched = new Set();
    for (const point of points) {
      const [metric, step] = point;
      if (!byMetric.has(metric)) byMetric.set(metric, { points: [], steps: new Set() });
      const series = byMetric.get(metric);
      if (series.steps.has(step)) continue; // a retried batch: ingestion is idempotent, so are we
      series.steps.add(step);
      const last = series.points[series.points.length - 1];
      series.points.push(point);
      if (last && step < last[1]) series.points.sort((p, q) => p[1] - q[1]);
      if (isCharted(metric)) touched.add(metric);
    }
    return touched;
  }

  /** The metric a chart shows now: itself, or its selected entity's series. */
  shownMetric(key) {
    if (!key.endsWith("/")) return key;
    const entities = this.entities(key);
    const chosen = this.view.entities[key];
    return key + (entities.includes(chosen) ? chosen : entities[0]);
  }

  draw(key) {
    const { plot, select } = this.card(key);
    if (select) this.fillEntitySelect(key, select);
    const metric = this.shownMetric(key);
    const info = describeMetric(this.catalogue, metric);
    const axis = X_AXES[this.view.xAxis];
    const raw = this.traces.map((trace) => this.series.get(trace.key)?.get(metric)?.points || []);
    const visible = raw.filter((_, index) => !this.view.hidden.has(this.traces[index].key));
    const yExtent = finiteExtent(visible.flat().map((p) => p[2]));
    const xExtent = finiteExtent(visible.flat().map((p) => p[axis.index]));
    const yScale = axisScale(info.unit, yExtent ? Math.max(Math.abs(yExtent[0]), Math.abs(yExtent[1])) : 0);
    const xScale = this.view.xAxis === "step" ? { factor: 1, label: "" } : axisScale("s", xExtent ? xExtent[1] : 0);
    const smoothing = this.view.smoothing;

    const data = [];
    const faint = [];
    this.traces.forEach((trace, index) => {
      const points = raw[index];
      const x = points.map((p) => roundSig(p[axis.index] / xScale.factor));
      const values = points.map((p) => p[2]);
      const colour = PALETTE[index % PALETTE.length];
      const hidden = this.view.hidden.has(trace.key);
      data.push({
        type: "scatter",
        mode: points.length > 60 ? "lines" : "lines+markers",
        name: trace.name,
        x,
        y: ema(values, smoothing).map((v) => roundSig(v / yScale.factor)),
        line: { color: colour, width: 2 },
        marker: { size: 5 },
        visible: hidden ? false : true,
        hovertemplate: `%{y:${yScale.hoverformat}}${yScale.percent ? "" : yScale.label ? ` ${yScale.label}` : ""}`,
      });
      if (smoothing > 0) {  // the raw values stay visible, faint, behind the smoothed line
        faint.push({
          type: "scatter", mode: "lines", name: `${trace.name} (raw)`, x,
          y: values.map((v) => roundSig(v / yScale.factor)), showlegend: false, hoverinfo: "skip",
          line: { color: colour, width: 1 }, opacity: 0.25, visible: hidden ? false : true,
        });
      }
    });
    const stepAxis = this.view.xAxis === "step";
    const shownExtent = yExtent && [roundSig(yExtent[0] / yScale.factor), roundSig(yExtent[1] / yScale.factor)];
    let yRange = null;
    if (this.view.logY) {  // plotly's log ranges are in powers of ten
      const flat = shownExtent && shownExtent[0] > 0 ? flatRange(shownExtent) : null;
      if (flat) yRange = [Math.log10(shownExtent[0] / 1.25), Math.log10(shownExtent[1] * 1.25)];
    } else if (yScale.percent && yExtent && yExtent[0] >= 0 && yExtent[1] <= 1) {
      yRange = [0, 1];
    } else {
      yRange = flatRange(shownExtent);
    }
    const layout = {
      height: 300,
      margin: { l: 8, r: 12, t: 30, b: 8 },
      xaxis: {
        title: { text: stepAxis ? axis.title : axisTitle(axis.title, xScale) },
        automargin: true, zeroline: false,
        ...(stepAxis ? { tickmode: "linear", tick0: 0, dtick: Math.max(1, niceStep(xExtent ? xExtent[1] : 1)), tickformat: "d" }
          : { tickformat: "~g", hoverformat: ".4~g" }),
      },
      yaxis: {
        title: { text: axisTitle(info.entity ? this.catalogue[chartKey(metric)]?.label || info.label : info.label, yScale) },
        automargin: true, zeroline: false,
        type: this.view.logY ? "log" : "linear",
        tickformat: yScale.tickformat, hoverformat: yScale.hoverformat,
        ...(yRange ? { range: yRange, autorange: false } : { autorange: true }),
      },
      showlegend: false,
      hovermode: "x unified",
      uirevision: `${key}:${this.view.xAxis}:${this.view.logY}`,
      font: { family: "system-ui, sans-serif", size: 12 },
    };
    window.Plotly.react(plot, [...data, ...faint], layout, PLOTLY_CONFIG);
    // The modebar stays usable with the mouse; keyboard focus skips its buttons.
    for (const button of plot.querySelectorAll(".modebar-btn, .modebar a")) button.setAttribute("tabindex", "-1");
  }

  card(key) {
    if (this.cards.has(key)) return this.cards.get(key);
    const info = describeMetric(this.catalogue, key.endsWith("/") ? `${key}x` : key);
    const label = key.endsWith("/") ? this.catalogue[key]?.label || key : info.label;
    const card = document.createElement("figure");
    card.className = "chart-card";
    card.dataset.chart = key;
    const head = document.createElement("figcaption");
    const title = document.createElement("h3");
    title.className = "chart-title";
    title.textContent = label;
    head.append(title);
    let select = null;
    if (key.endsWith("/")) {
      select = document.createElement("select");
      select.className = "entity-select";
      select.setAttribute("aria-label", `${label}: which one`);
      select.addEventListener("change", () => {
        this.setView({ entities: { ...this.view.entities, [key]: select.value } });
      });
      head.append(select);
    }
    if (info.description) {
      const description = document.createElement("p");
      description.className = "chart-description";
      description.textContent = info.description;
      head.append(description);
    }
    const plot = document.createElement("div");
    plot.className = "chart";
    plot.dataset.metric = key;
    plot.setAttribute("role", "img");
    plot.setAttribute("aria-label", `Chart of ${label} per run`);
    card.append(head, plot);
    // Keep the charts in display order whatever order their first points arrive in.
    const next = [...this.cards.keys()].filter((k) => keyOrder(k, key) > 0).sort(keyOrder)[0];
    if (next !== undefined) this.container.insertBefore(card, this.cards.get(next).card);
    else this.container.appendChild(card);
    const entry = { card, plot, select };
    this.cards.set(key, entry);
    this.bindZoom(key, plot);
    return entry;
  }

  /** On zoom or reset, tell `onZoom` (a full-resolution fetch of that x range plugs in here). */
  bindZoom(key, plot) {
    const listen = () => {
      if (typeof plot.on !== "function") return;
      plot.on("plotly_relayout", (event) => {
        if (!this.onZoom) return;
        if (event["xaxis.autorange"]) this.onZoom(key, null);
        // A drag gives "xaxis.range[0]" and "[1]"; Plotly.relayout(div, {"xaxis.range": [a, b]}) the pair.
        else if ("xaxis.range[0]" in event) this.onZoom(key, [event["xaxis.range[0]"], event["xaxis.range[1]"]]);
        else if (Array.isArray(event["xaxis.range"])) this.onZoom(key, event["xaxis.range"]);
      });
    };
    // plot.on exists once plotly has drawn the div; draw() runs right after card().
    setTimeout(listen, 0);
  }

  fillEntitySelect(key, select) {
    const entities = this.entities(key);
    const shown = this.shownMetric(key).slice(key.length);
    if (select.options.length !== entities.length
      || [...select.options].some((option, index) => option.value !== entities[index])) {
      select.replaceChildren(...entities.map((entity) => new Option(entity, entity)));
    }
    select.value = shown;
  }

  renderLegend() {
    if (!this.legend) return;
    this.legend.replaceChildren(...this.traces.map((trace, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "legend-item";
      button.dataset.key = trace.key;
      button.setAttribute("aria-pressed", this.view.hidden.has(trace.key) ? "false" : "true");
      button.title = "Show or hide this run on every chart";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = PALETTE[index % PALETTE.length];
      button.append(swatch, document.createTextNode(trace.name));
      button.addEventListener("click", () => this.toggleRun(trace.key));
      return button;
    }));
  }

  updateEmptyNote() {
    let note = this.container.querySelector(".empty");
    if (this.cards.size === 0) {
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
