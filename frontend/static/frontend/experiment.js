// Experiment page: live run states, progress, charts, logs and cancel, fed by
// ws/experiments/<id>/.
import { api, websocketUrl } from "./api.js";
import { ChartBoard, PALETTE } from "./charts.js";
import { bindControls, viewFromUrl } from "./controls.js";
import { fetchOnZoom } from "./history_zoom.js";
import { Acks } from "./live_acks.js";
import { renderPlacement } from "./placement.js";
import { progressText } from "./progress.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const page = JSON.parse(document.getElementById("experiment-data").textContent);
let traces = page.runs.map((run) => ({ key: run.id, name: run.method }));

const board = new ChartBoard(document.getElementById("charts"), traces, {
  legend: document.getElementById("legend"),
  catalogue: page.metric_catalogue,
  view: viewFromUrl(traces),
});
bindControls(board, () => traces);
fetchOnZoom(board, () => traces.map((trace) => trace.key));

const runsBox = document.getElementById("runs");
const logs = document.getElementById("logs");
const liveState = document.getElementById("live-state");
const statusBadge = document.getElementById("experiment-status");
const cancelButton = document.getElementById("cancel");
const cancelDialog = document.getElementById("cancel-dialog");
const cancelMessage = document.getElementById("cancel-message");
const runs = new Map(); // run id -> run object as last received
const lastStep = new Map(); // run id -> highest step reported
let cancelRequested = false;
let connected = false;

function setBadge(element, state) {
  element.className = `badge ${state}`;
  element.textContent = state;
}

let serverStatus = null; // the experiment status the last "run" event carried

/** The experiment's status: as the server last said, else derived from its runs' states. */
function experimentStatus() {
  if (serverStatus) return serverStatus;
  const states = [...runs.values()].map((run) => run.state);
  if (states.length === 0) return statusBadge.textContent.trim();
  if (states.some((state) => state === "queued" || state === "running")) return "running";
  if (states.every((state) => state === "succeeded")) return "succeeded";
  if (states.includes("cancelled")) return "cancelled";
  return "failed";
}

/** The badge and messages follow the experiment to its final state. */
function refreshStatus() {
  const status = experimentStatus();
  setBadge(statusBadge, status);
  const finished = FINISHED.has(status);
  cancelButton.disabled = finished;
  if (finished && connected) {
    liveState.textContent = `Finished: ${status}`;
    liveState.className = `badge ${status}`;
  }
  if (finished && cancelRequested) {
    const stopped = [...runs.values()].filter((run) => run.state === "cancelled").length;
    cancelMessage.textContent = status === "cancelled"
      ? `Cancelled: ${stopped} run${stopped === 1 ? "" : "s"} stopped.`
      : `The experiment ended as ${status} before the cancel reached it.`;
  }
}

function runCard(run, index) {
  let card = runsBox.querySelector(`[data-run-id="${run.id}"]`);
  if (!card) {
    card = document.createElement("div");
    card.className = "run-card";
    card.dataset.runId = run.id;
    card.innerHTML = '<div><span class="method"></span> <span class="badge"></span></div>'
      + '<div class="meta"></div><div class="progress" hidden></div><div class="queue-reason"></div>'
      + '<div class="run-error"></div>';
    runsBox.appendChild(card);
  }
  if (index !== undefined) card.style.setProperty("--run-color", PALETTE[index % PALETTE.length]);
  card.querySelector(".method").textContent = run.method;
  setBadge(card.querySelector(".badge"), run.state);
  const role = run.method === page.algorithm ? "method" : "baseline";
  const host = run.job?.device_name || "";
  // What produced it, once its agent started it (short commit, or the package version).
  const code = (run.provenance?.code_version || "").replace(/^git:([0-9a-f]{10})[0-9a-f]*/, "git:$1");
  card.querySelector(".meta").textContent =
    [role, host && `on ${host}`, code && `code ${code}`].filter(Boolean).join(" · ");
  // A queued run says why it waits: its place in the device's queue, what holds the device.
  // A distributed run's placement box says which devices its gang waits for.
  card.querySelector(".queue-reason").textContent = run.state === "queued" && !run.placement?.length
    ? run.queue_reason || run.job?.waiting_reason || "" : "";
  card.querySelector(".run-error").textContent = run.error || "";
  renderPlacement(card, run);
  showProgress(run.id);
}

function showProgress(runId) {
  const run = runs.get(runId);
  const card = runsBox.querySelector(`[data-run-id="${runId}"]`);
  if (!run || !card) return;
  const text = progressText(run, lastStep.get(runId), Date.now());
  const box = card.querySelector(".progress");
  box.textContent = text;
  box.hidden = !text;
}

function notePoints(runId, points) {
  let highest = lastStep.get(runId) ?? -1;
  for (const point of points) if (point[1] > highest) highest = point[1];
  if (highest >= 0) lastStep.set(runId, highest);
  showProgress(runId);
}

function onHistory(message) {
  runs.clear();
  serverStatus = message.experiment?.status || null;
  const ordered = message.runs || [];
  ordered.forEach((run, index) => {
    runs.set(run.id, run);
    runCard(run, index);
  });
  traces = ordered.map((run) => ({ key: run.id, name: run.method }));
  board.reset(traces, message.points || {});
  for (const [runId, points] of Object.entries(message.points || {})) notePoints(runId, points);
  // The history carries each run's latest log lines; a reconnect replaces what was shown.
  logs.replaceChildren();
  for (const [runId, lines] of Object.entries(message.logs || {})) appendLogLines(runId, lines);
  refreshStatus();
}

function onRun(message) {
  const run = message.run;
  runs.set(run.id, { ...runs.get(run.id), ...run });
  const index = [...runs.keys()].indexOf(run.id);
  runCard(runs.get(run.id), index);
  if (message.experiment?.status) serverStatus = message.experiment.status;
  refreshStatus();
}

function appendLogLines(runId, lines) {
  const method = runs.get(runId)?.method || "run";
  const stick = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
  for (const line of lines) {
    const row = document.createElement("div");
    const tag = document.createElement("span");
    tag.className = "run-tag";
    tag.textContent = `[${method}] `;
    row.append(tag, document.createTextNode(line));
    logs.appendChild(row);
  }
  if (stick) logs.scrollTop = logs.scrollHeight;
}

const handlers = {
  history: onHistory,
  points: (message) => {
    board.add(message.run, message.points || []);
    notePoints(message.run, message.points || []);
  },
  run: onRun,
  log: (message) => appendLogLines(message.run, message.lines || []),
};

let retryDelayMs = 1000;

function connect() {
  const socket = new WebSocket(websocketUrl(page.ws_path));
  const acks = new Acks(socket);
  socket.addEventListener("open", () => {
    liveState.textContent = "Connecting…";
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "history") {  // "Live" once the server has joined us to the events
      connected = true;
      liveState.textContent = "Live";
      liveState.className = "badge online";
      retryDelayMs = 1000;
    }
    const handler = handlers[message.type];
    if (handler) handler(message);
    acks.note(message, event.data.length);
  });
  socket.addEventListener("close", (event) => {
    connected = false;
    acks.stop();
    liveState.dataset.closeCode = event.code; // 4008: fell too far behind (tests read it)
    if (event.code === 4404) { // not this user's experiment, or no such experiment
      liveState.textContent = "Not found";
      liveState.className = "badge failed";
      return;
    }
    liveState.textContent = "Reconnecting…";
    liveState.className = "badge queued";
    // On reconnect the server sends the whole history again, which resets the charts: after
    // 4008 (this page fell too far behind, e.g. a stalled tab) nothing is lost but time.
    setTimeout(connect, retryDelayMs);
    retryDelayMs = Math.min(retryDelayMs * 2, 15000);
  });
}

/** Queued runs wait on other experiments' jobs, whose events this page does not get: ask. */
async function refreshQueued() {
  for (const run of [...runs.values()].filter((r) => r.state === "queued")) {
    try {
      const fresh = await api(page.run_url_template.replace(page.id_placeholder, run.id));
      if (runs.get(run.id)?.state === "queued") onRun({ run: fresh });
    } catch {
      // the next refresh retries
    }
  }
  // Progress ETAs age too.
  for (const runId of runs.keys()) showProgress(runId);
}

const rerunButton = document.getElementById("rerun");
rerunButton.addEventListener("click", async () => {
  rerunButton.disabled = true;
  cancelMessage.textContent = "Starting a rerun…";
  try {
    const rerun = await api(page.rerun_url, { method: "POST" });
    window.location.assign(`${window.location.pathname.replace(/[^/]+\/$/, "")}${rerun.id}/`);
  } catch (error) {
    const data = error.data || {};
    const detail = data.detail || Object.values(data).flat().join(" ") || error.message;
    cancelMessage.textContent = `Could not rerun: ${detail}`;
    rerunButton.disabled = false;
  }
});

async function cancelExperiment() {
  cancelButton.disabled = true;
  cancelMessage.textContent = "Cancelling…";
  try {
    await api(page.cancel_url, { method: "POST", body: {} });
    cancelRequested = true;
    cancelMessage.textContent = "Cancel requested; runs stop within seconds.";
  } catch (error) {
    const detail = error.data?.detail || error.message;
    cancelMessage.textContent = `Could not cancel: ${detail}`;
  }
  refreshStatus();
}

// Cancelling cannot be undone: ask first.
cancelButton.addEventListener("click", () => cancelDialog.showModal());
cancelDialog.addEventListener("close", () => {
  if (cancelDialog.returnValue === "cancel") cancelExperiment();
  else cancelButton.focus();
});

refreshStatus();
connect();
setInterval(refreshQueued, 5000);
