// A run's progress: "Round 3 of 20 · about 2 min left", from its highest reported step, its
// config's length and the wall time since it started.

/** Config keys that give a run's length in steps, the first present wins. */
const LENGTH_KEYS = ["rounds", "outer_steps", "total_steps", "steps", "max_new_tokens"];

function duration(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** The run's length in steps and the word for a step, or null when its config has none. */
export function runLength(config) {
  for (const key of LENGTH_KEYS) {
    const value = config?.[key];
    if (Number.isInteger(value) && value > 0) return { total: value, unit: key === "rounds" ? "Round" : "Step" };
  }
  return null;
}

/** The progress line of a running (or finished) run, "" when there is nothing to say. */
export function progressText(run, highestStep, nowMs) {
  const length = runLength(run.config);
  if (!length || highestStep === undefined || run.state === "queued") return "";
  const done = Math.min(Math.max(highestStep, 0), length.total);
  let text = `${length.unit} ${done} of ${length.total}`;
  if (run.state === "running" && run.started_at && done > 0 && done < length.total) {
    const elapsed = (nowMs - Date.parse(run.started_at)) / 1000;
    if (elapsed > 0) text += ` · about ${duration((elapsed / done) * (length.total - done))} left`;
  }
  return text;
}
