// Experiment page: live run states, charts, logs and cancel, fed by ws/experiments/<id>/.
import { api, websocketUrl } from "./api.js";
import { ChartBoard, PALETTE, bindXAxisSelect } from "./charts.js";
import { renderPlacement } from "./placement.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const page = JSON.parse(document.getElementById("experiment-data").textContent);

const board = new ChartBoard(document.getElementById("charts"), []);
bindXAxisSelect(document.getElementById("x-axis"), board);

const runsBox = document.getElementById("runs");
const logs = document.getElementById("logs");
const liveState = document.getElementById("live-state");
const statusBadge = document.getElementById("experiment-status");
const cancelButton = document.getElementById("cancel");
const cancelMessage = document.getElementById("cancel-message");
const runs = new Map(); // run id -> run object as last received

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

function refreshStatus() {
  const status = experimentStatus();
  setBadge(statusBadge, status);
  cancelButton.disabled = FINISHED.has(status);
}

function runCard(run, index) {
  let card = runsBox.querySelector(`[data-run-id="${run.id}"]`);
  if (!card) {
    card = document.createElement("div");
    card.className = "run-card";
    card.dataset.runId = run.id;
    card.innerHTML = '<div><span class="method"></span> <span class="badge"></span></div>'
      + '<div class="meta"></div><div class="run-error"></div>';
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
  // A queued job says why it waits (its device offline, or its agent not taking jobs).
  card.querySelector(".run-error").textContent = run.error || run.job?.waiting_reason || "";
  renderPlacement(card, run);
}

function onHistory(message) {
  runs.clear();
  serverStatus = message.experiment?.status || null;
  const ordered = message.runs || [];
  ordered.forEach((run, index) => {
    runs.set(run.id, run);
    runCard(run, index);
  });
  board.reset(ordered.map((run) => ({ key: run.id, name: run.method })), message.points || {});
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
  points: (message) => board.add(message.run, message.points || []),
  run: onRun,
  log: (message) => appendLogLines(message.run, message.lines || []),
};

let retryDelayMs = 1000;

function connect() {
  const socket = new WebSocket(websocketUrl(page.ws_path));
  socket.addEventListener("open", () => {
    liveState.textContent = "Connecting…";
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "history") {  // "Live" once the server has joined us to the events
      liveState.textContent = "Live";
      liveState.className = "badge online";
      retryDelayMs = 1000;
    }
    const handler = handlers[message.type];
    if (handler) handler(message);
  });
  socket.addEventListener("close", (event) => {
    if (event.code === 4404) { // not this user's experiment, or no such experiment
      liveState.textContent = "Not found";
      liveState.className = "badge failed";
      return;
    }
    liveState.textContent = "Reconnecting…";
    liveState.className = "badge queued";
    // On reconnect the server sends the whole history again, which resets the charts.
    setTimeout(connect, retryDelayMs);
    retryDelayMs = Math.min(retryDelayMs * 2, 15000);
  });
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

cancelButton.addEventListener("click", async () => {
  cancelButton.disabled = true;
  cancelMessage.textContent = "Cancelling…";
  try {
    await api(page.cancel_url, { method: "POST", body: {} });
    cancelMessage.textContent = "Cancel requested; runs stop within seconds.";
  } catch (error) {
    const detail = error.data?.detail || error.message;
    cancelMessage.textContent = `Could not cancel: ${detail}`;
    refreshStatus();
  }
});

refreshStatus();
connect();
