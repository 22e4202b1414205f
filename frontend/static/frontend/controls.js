// The chart controls of a page (x axis, smoothing, log scale, hidden runs, entities) bound to
// a ChartBoard and kept in the page's URL, so a view can be shared as a link.
import { X_AXES, defaultView } from "./charts.js";

const SMOOTHING_MAX = 0.99;

/**
 * The view the URL asks for: ?x=sim_time_s&smooth=0.6&log=1&hide=0,2&entity.waiting_time_s=worker-03
 * (`hide` holds run positions). Unknown or bad values fall back to the default.
 */
export function viewFromUrl(traces, search = window.location.search) {
  const params = new URLSearchParams(search);
  const view = defaultView();
  if (params.get("x") in X_AXES) view.xAxis = params.get("x");
  const smoothing = Number(params.get("smooth"));
  if (Number.isFinite(smoothing) && smoothing > 0) view.smoothing = Math.min(smoothing, SMOOTHING_MAX);
  view.logY = params.get("log") === "1";
  for (const part of (params.get("hide") || "").split(",")) {
    const trace = traces[Number.parseInt(part, 10)];
    if (part !== "" && trace) view.hidden.add(trace.key);
  }
  for (const [name, value] of params) {
    if (name.startsWith("entity.")) view.entities[`${name.slice(7)}/`] = value;
  }
  return view;
}

/** Write `view` into the URL (replacing the history entry: a toggle is not a page). */
export function writeViewToUrl(view, traces) {
  const params = new URLSearchParams(window.location.search);
  for (const name of [...params.keys()]) {
    if (["x", "smooth", "log", "hide"].includes(name) || name.startsWith("entity.")) params.delete(name);
  }
  if (view.xAxis !== "step") params.set("x", view.xAxis);
  if (view.smoothing > 0) params.set("smooth", String(view.smoothing));
  if (view.logY) params.set("log", "1");
  const hidden = traces.map((trace, index) => (view.hidden.has(trace.key) ? index : -1)).filter((i) => i >= 0);
  if (hidden.length) params.set("hide", hidden.join(","));
  for (const [key, entity] of Object.entries(view.entities)) params.set(`entity.${key.replace(/\/$/, "")}`, entity);
  const query = params.toString().replaceAll("%2C", ",");
  window.history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}`);
}

/** Wire the toolbar's inputs (#x-axis, #smoothing, #log-scale) to `board`, both ways. */
export function bindControls(board, getTraces) {
  const xAxis = document.getElementById("x-axis");
  const smoothing = document.getElementById("smoothing");
  const smoothingValue = document.getElementById("smoothing-value");
  const logScale = document.getElementById("log-scale");
  const show = (view) => {
    xAxis.value = view.xAxis;
    smoothing.value = String(view.smoothing);
    smoothingValue.textContent = view.smoothing > 0 ? view.smoothing.toFixed(2) : "off";
    logScale.checked = view.logY;
  };
  show(board.view);
  board.onViewChange = (view) => {
    show(view);
    writeViewToUrl(view, getTraces());
  };
  xAxis.addEventListener("change", () => board.setView({ xAxis: xAxis.value }));
  smoothing.addEventListener("input", () => board.setView({ smoothing: Number(smoothing.value) }));
  logScale.addEventListener("change", () => board.setView({ logY: logScale.checked }));
}
