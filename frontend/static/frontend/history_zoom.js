// Full resolution on zoom: the live view's history is downsampled per series (min and max per
// bucket, docs/architecture.md); when the user zooms a chart in on steps, the points of the
// visible step range are fetched from the API and merged into the board's series, which then
// redraws at the finer resolution (the zoom is kept: plotly's uirevision).
import { api } from "./api.js";

/** Buckets asked for a zoomed range: a range of at most twice this many points comes whole. */
const ZOOM_BUCKETS = 1000;

/**
 * Make `board` (a ChartBoard) fetch the zoomed step range of a chart at full resolution for
 * every run of `runKeys()` (run ids, in trace order). Only the step axis is fetched by range.
 */
export function fetchOnZoom(board, runKeys) {
  let generation = 0;
  board.onZoom = async (key, range) => {
    if (!range || board.xAxis !== "step") return;
    const mine = ++generation;
    const metric = board.shownMetric(key);
    const from = Math.max(0, Math.floor(range[0]));
    const to = Math.max(from, Math.ceil(range[1]));
    const query = `name=${encodeURIComponent(metric)}&from_step=${from}&to_step=${to}&buckets=${ZOOM_BUCKETS}`;
    const keys = runKeys();
    const answers = await Promise.all(
      keys.map((run) => api(`/api/v1/runs/${run}/metrics/?${query}`).catch(() => null)),
    );
    if (mine !== generation) return; // a newer zoom came meanwhile
    answers.forEach((answer, index) => {
      if (!answer) return;
      board.add(keys[index], answer.points.map(
        (p) => [p.name, p.step, p.value, p.sim_time_s, p.wall_time_s]));
    });
  };
}
