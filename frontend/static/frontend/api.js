// fetch helper for the REST API: session cookie + CSRF header, JSON in and out.

/** The CSRF token the server rendered into the page's <meta name="csrf-token">. */
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

/** An API answer that is not 2xx; `data` is the parsed JSON body (or {detail: text}). */
export class ApiError extends Error {
  constructor(status, data) {
    super(`HTTP ${status}: ${JSON.stringify(data)}`);
    this.status = status;
    this.data = data;
  }
}

/**
 * Call the API at `path` (e.g. "/api/v1/experiments/"); resolves to the parsed JSON body.
 * Throws ApiError on a non-2xx answer.
 */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") {
    headers["X-CSRFToken"] = csrfToken();
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 500) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data || {});
  return data;
}

/** Every item of a list endpoint, following DRF's `next` links when the answer is paginated. */
export async function apiList(path) {
  const first = await api(path);
  if (Array.isArray(first)) return first;
  const items = [...(first.results || [])];
  let next = first.next;
  while (next) {
    const page = await api(next);
    items.push(...(page.results || []));
    next = page.next;
  }
  return items;
}

/** Flatten a DRF error body into {"dotted.path": "message"} ("config.rounds": "..."). */
export function flattenErrors(data, prefix = "") {
  const out = {};
  if (data === null || data === undefined) return out;
  if (typeof data === "string") {
    out[prefix || "non_field_errors"] = data;
  } else if (Array.isArray(data)) {
    if (data.every((item) => typeof item === "string")) {
      out[prefix || "non_field_errors"] = data.join(" ");
    } else {
      data.forEach((item, index) => Object.assign(out, flattenErrors(item, prefix ? `${prefix}.${index}` : String(index))));
    }
  } else if (typeof data === "object") {
    for (const [key, value] of Object.entries(data)) {
      Object.assign(out, flattenErrors(value, prefix ? `${prefix}.${key}` : key));
    }
  }
  return out;
}

/** "ws://host/path" or "wss://host/path" for a path on this server. */
export function websocketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}${path}`;
}
