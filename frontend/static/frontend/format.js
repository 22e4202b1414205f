// Numbers as a person reads them: units from the metric catalogue (ml/metrics_catalogue.py),
// bytes in kB/MB/GB, durations in ms/s/min/h, fractions as percents, no float noise.

/** `value` rounded to `digits` significant digits (0.32224428714666 -> 0.322244). */
export function roundSig(value, digits = 6) {
  if (!Number.isFinite(value) || value === 0) return value;
  return Number(value.toPrecision(digits));
}

/** The catalogue entry of a metric name: exact, else its "prefix/" entry with the entity. */
export function describeMetric(catalogue, name) {
  if (catalogue[name]) return { key: name, ...catalogue[name] };
  const slash = name.indexOf("/");
  if (slash !== -1) {
    const prefix = name.slice(0, slash + 1);
    if (catalogue[prefix]) {
      return { key: prefix, ...catalogue[prefix], entity: name.slice(slash + 1) };
    }
  }
  return { key: name, label: name, unit: "", description: "" };
}

const BYTE_SCALES = [[1e12, "TB"], [1e9, "GB"], [1e6, "MB"], [1e3, "kB"], [1, "B"]];
const FLOP_SCALES = [[1e15, "PFLOP"], [1e12, "TFLOP"], [1e9, "GFLOP"], [1e6, "MFLOP"], [1, "FLOP"]];

/** Seconds shown in h from 2 h, min from 2 min, s from 1 s, else ms. */
function secondsScale(seconds) {
  if (seconds >= 7200) return { factor: 3600, label: "h" };
  if (seconds >= 120) return { factor: 60, label: "min" };
  if (seconds >= 1) return { factor: 1, label: "s" };
  return { factor: 1e-3, label: "ms" };
}

function pick(scales, magnitude, floor = 1) {
  for (const [factor, label] of scales) if (magnitude >= factor * floor) return { factor, label };
  const [factor, label] = scales[scales.length - 1];
  return { factor, label };
}

/**
 * How to draw values of `unit` whose largest magnitude is `magnitude`: divide by `factor`,
 * call the unit `label`, format ticks with `tickformat`. Fractions stay in [0, 1] and format
 * as percents.
 */
export function axisScale(unit, magnitude) {
  const m = Math.abs(magnitude || 0);
  switch (unit) {
    case "fraction":
      return { factor: 1, label: "%", tickformat: ".0%", hoverformat: ".2%", percent: true };
    case "bytes":
      return { ...pick(BYTE_SCALES, m), tickformat: "~g", hoverformat: ".4~g" };
    case "bytes/token":
      return { ...pick(BYTE_SCALES, m), tickformat: "~g", hoverformat: ".4~g", suffix: "/token" };
    case "s":
      return { ...secondsScale(m), tickformat: "~g", hoverformat: ".4~g" };
    case "ms":
    {  // values in ms; the scale's factor is in seconds
      const seconds = secondsScale(m / 1000);
      return { factor: seconds.factor * 1000, label: seconds.label, tickformat: "~g", hoverformat: ".4~g" };
    }
    case "flops":
      return { ...pick(FLOP_SCALES, m), tickformat: "~g", hoverformat: ".4~g" };
    case "count":
    case "tokens":
      return { factor: 1, label: unit === "tokens" ? "tokens" : "", tickformat: ",~r", hoverformat: ",.4~g" };
    default:
      return { factor: 1, label: "", tickformat: "~g", hoverformat: ".4~g" };
  }
}

/** An axis title: "Traffic (MB)", "Accuracy (%)", "Loss". */
export function axisTitle(label, scale) {
  const unit = scale.label ? `${scale.label}${scale.suffix || ""}` : "";
  return unit ? `${label} (${unit})` : label;
}

/** One value for a table or hover text: "81.2%", "12.3 MB", "0.322 s". */
export function formatValue(value, unit) {
  if (value === null || value === undefined) return "—";
  if (!Number.isFinite(value)) return String(value);
  if ((unit === "count" || unit === "tokens") && Number.isInteger(value)) return value.toLocaleString("en");
  const scale = axisScale(unit, value);
  if (scale.percent) return `${roundSig(value * 100, 4)}%`;
  const shown = roundSig(value / scale.factor, 4);
  const text = Math.abs(shown) >= 10_000 ? shown.toLocaleString("en") : String(shown);
  return scale.label ? `${text} ${scale.label}${scale.suffix || ""}` : text;
}

/** A "nice" tick spacing (1, 2 or 5 × 10^k) for about `ticks` ticks over `span`. */
export function niceStep(span, ticks = 6) {
  if (!(span > 0)) return 1;
  const raw = span / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const scaled = raw / power;
  return (scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10) * power;
}

/**
 * Debiased exponential moving average (as TensorBoard draws it): `weight` in [0, 1), 0 keeps
 * the values.
 */
export function ema(values, weight) {
  if (!(weight > 0)) return values.slice();
  const out = [];
  let last = 0;
  let debias = 0;
  for (const value of values) {
    last = last * weight + (1 - weight) * value;
    debias = debias * weight + (1 - weight);
    out.push(last / debias);
  }
  return out;
}
