// Full resolution on zoom: the live view's history is downsampled per series (min and max per
// bucket, docs/architecture.md); when the user zooms a chart in on steps, the points of the
// visible step range are fetched from the API and replace the traces until the zoom is reset.
import { api } from "./api.js";

/** Buckets asked for a zoomed range: a range of at most twice this many points comes whole. */
const ZOOM_BUCKETS = 1000;

/**
 * Follow the zoom of plotly chart `div`, which draws `metric` with one trace per run of `runs`
 * (run ids, in trace order) against `xAxis()` (a function: the board's current x-axis name).
 * Only the step axis is fetched by range; `restore()` redraws the board's own (downsampled)
 * points when the zoom is reset. Returns a function that stops following.
 */
export function followZoom(div, { runs, metric, xAxis, restore }) {
  let generation = 0;
  const onRelayout = async (change) => {
    if (change["xaxis.autorange"]) {
      generation += 1;
      restore();
      return;
    }
    // A drag gives "xaxis.range[0]" and "[1]"; Plotly.relayout(div, {"xaxis.range": [a, b]}) the pair.
    const [low, high] = change["xaxis.range"] || [change["xaxis.range[0]"], change["xaxis.range[1]"]];
    if (low === undefined || high === undefined || xAxis() !== "step") return;
    const mine = ++generation;
    const from = Math.max(0, Math.floor(low));
    const to = Math.max(from, Math.ceil(high));
    const query = `name=${encodeURIComponent(metric)}&from_step=${from}&to_step=${to}&buckets=${ZOOM_BUCKETS}`;
    const answers = await Promise.all(
      runs().map((run) => api(`/api/v1/runs/${run}/metrics/?${query}`).catch(() => null)),
    );
    if (mine !== generation) return; // a newer zoom (or a reset) came meanwhile
    answers.forEach((answer, index) => {
      if (!answer) return;
      // Splice the range into the trace: points outside it stay as they are.
      const trace = div.data[index];
      const outside = trace.x.map((x, i) => [x, trace.y[i]]).filter(([x]) => x < from || x > to);
      const inside = answer.points.map((p) => [p.step, p.value]);
      const merged = [...outside, ...inside].sort((p, q) => p[0] - q[0]);
      window.Plotly.restyle(div, { x: [merged.map((p) => p[0])], y: [merged.map((p) => p[1])] }, [index]);
    });
  };
  div.on("plotly_relayout", onRelayout);
  return () => div.removeListener("plotly_relayout", onRelayout);
}
