// Devices page: the device table kept live from GET /api/v1/devices/; enrolment tokens
// (create, list, revoke) and replacement tokens that give one device a new credential.
import { api, apiList } from "./api.js";

const page = JSON.parse(document.getElementById("devices-data").textContent);
const rows = document.getElementById("device-rows");
const emptyRow = rows.querySelector(".empty").closest("tr");
const tokenButton = document.getElementById("create-token");
const tokenBox = document.getElementById("token-box");
const tokenError = document.getElementById("token-error");
const agentName = document.getElementById("agent-name");
const agentProfile = document.getElementById("agent-profile");
const tokenNote = document.getElementById("token-note");
const command = document.getElementById("agent-command");
const tokenRows = document.getElementById("token-rows");
const emptyTokenRow = tokenRows.querySelector(".empty").closest("tr");
const tokensError = document.getElementById("tokens-error");
// The token shown and, for a replacement token, the one device (name, profile) it enrols.
let issued = { token: "", device: null };
let devicesById = new Map();

const TOKEN_BADGES = { active: "online", used: "succeeded", expired: "offline", revoked: "failed" };

const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** "2026-11-25 11:00:46" in the browser's time zone. */
function timestamp(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

/** One table row from a device as the API serializes it. */
function deviceRow(device) {
  const tr = document.createElement("tr");
  tr.dataset.deviceId = device.id;
  const status = cell("", "status");
  const badge = document.createElement("span");
  badge.className = `badge ${device.status}`;
  badge.textContent = device.status;
  status.append(badge);
  if (device.status_detail) {  // why its queued jobs wait (offline, or not taking jobs)
    const detail = document.createElement("div");
    detail.className = "status-detail";
    detail.textContent = device.status_detail;
    status.append(detail);
  }
  // What it does now: its jobs (experiment, method, role) and how many wait behind them.
  for (const job of device.current_jobs || []) {
    const line = document.createElement("div");
    line.className = "current-job";
    line.textContent = `running ${job.method} of “${job.experiment_name}” (${job.role})`;
    status.append(line);
  }
  if (device.queue_depth) {
    const waiting = document.createElement("div");
    waiting.className = "queue-depth";
    waiting.textContent = `${device.queue_depth} job${device.queue_depth === 1 ? "" : "s"} queued`;
    status.append(waiting);
  }
  const seen = cell(timestamp(device.last_seen), "last-seen nowrap");
  if (device.last_seen) seen.title = device.last_seen;
  tr.append(
    cell(device.name, "nowrap"),
    cell(device.kind),
    cell(device.profile_name, "nowrap"),
    status,
    cell(number.format(device.compute_gflops), "num"),
    cell(number.format(device.memory_mib), "num"),
    cell(`${number.format(device.uplink_mbps)} / ${number.format(device.downlink_mbps)}`, "num nowrap"),
    cell(number.format(device.rtt_ms), "num"),
    cell(device.accelerator || "—"),
    cell(loadText(device.resources), "load nowrap"),
    seen,
    actionCell("New credential", { replace: device.id },
      `A one-time token that gives ${device.name} a new credential (its old one stops working)`),
  );
  return tr;
}

/** "CPU 12% · mem 43% · GPU 80% (9.1/80 GiB)" from the agent's last heartbeat. */
function loadText(resources) {
  if (!resources || resources.cpu_percent === undefined) return "—";
  const parts = [`CPU ${Math.round(resources.cpu_percent)}%`, `mem ${Math.round(resources.memory_percent)}%`];
  for (const gpu of resources.gpus || []) {
    const memory = `${(gpu.memory_used_mib / 1024).toFixed(1)}/${(gpu.memory_total_mib / 1024).toFixed(0)} GiB`;
    parts.push(gpu.utilization_percent === null || gpu.utilization_percent === undefined
      ? `GPU ${memory}` : `GPU ${Math.round(gpu.utilization_percent)}% (${memory})`);
  }
  return parts.join(" · ");
}

function actionCell(label, data, title) {
  const td = cell("", "nowrap");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.title = title;
  Object.assign(button.dataset, data);
  td.append(button);
  return td;
}

function render(devices) {
  devicesById = new Map(devices.map((device) => [device.id, device]));
  rows.replaceChildren(...(devices.length ? devices.map(deviceRow) : [emptyRow]));
}

/** One row of the token table; the secret itself is never listed. */
function tokenRow(token) {
  const tr = document.createElement("tr");
  tr.dataset.tokenId = token.id;
  const status = cell("", "status");
  const badge = document.createElement("span");
  badge.className = `badge ${TOKEN_BADGES[token.status] || "offline"}`;
  badge.textContent = token.status;
  status.append(badge);
  const replaces = token.replace_device ? devicesById.get(token.replace_device)?.name || "a device" : "—";
  tr.append(
    cell(token.note || "—"),
    cell(timestamp(token.created), "nowrap"),
    cell(timestamp(token.expires_at), "nowrap"),
    status,
    cell(number.format(token.uses), "num"),
    cell(replaces),
    token.status === "active" ? actionCell("Revoke", { revoke: token.id }, "No agent can enrol with it afterwards") : cell(""),
  );
  return tr;
}

async function refreshTokens() {
  try {
    const tokens = await apiList(page.enrolment_tokens_url);
    tokenRows.replaceChildren(...(tokens.length ? tokens.map(tokenRow) : [emptyTokenRow]));
  } catch (error) {
    tokensError.textContent = `Could not list the tokens: ${error.data?.detail || error.message}`;
  }
}

async function refresh() {
  try {
    render(await apiList(page.devices_url));
  } catch {
    // A missed refresh is harmless; the next one retries.
  }
}

/** Quote a shell word only when it needs it. */
function shellWord(word) {
  return /^[A-Za-z0-9_./:@=+-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

function renderCommand() {
  const name = issued.device ? issued.device.name : agentName.value || "my-device";
  const profile = issued.device ? issued.device.profile_name : agentProfile.value;
  command.textContent = ["python", "-m", "agents", "run", "--server", window.location.origin,
    "--token", issued.token, "--name", name, "--profile", profile]
    .map(shellWord).join(" ");
}

/** POST a new token (for `device`: a replacement token) and show it with its command. */
async function issueToken(body, device, button) {
  button.disabled = true;
  tokenError.textContent = "";
  try {
    const answer = await api(page.enrolment_tokens_url, { method: "POST", body });
    issued = { token: answer.token, device };
    document.getElementById("token-kind").textContent =
      device ? `Replacement token for ${device.name}` : "Token";
    document.getElementById("token-value").textContent = answer.token;
    document.getElementById("token-expiry").textContent = timestamp(answer.expires_at);
    renderCommand();
    tokenBox.hidden = false;
    await refreshTokens();
  } catch (error) {
    tokenError.textContent = `Could not create a token: ${error.data?.detail || error.message}`;
  } finally {
    button.disabled = false;
  }
}

tokenButton.addEventListener("click", () => issueToken(
  { ttl_hours: 24, note: tokenNote.value.trim() }, null, tokenButton));

rows.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-replace]");
  const device = button && devicesById.get(button.dataset.replace);
  if (!device) return;
  issueToken({ ttl_hours: 24, replace_device: device.id, note: `new credential for ${device.name}` },
    device, button);
  tokenBox.scrollIntoView({ block: "nearest" });
});

tokenRows.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-revoke]");
  if (!button) return;
  button.disabled = true;
  tokensError.textContent = "";
  try {
    await api(`${page.enrolment_tokens_url}${button.dataset.revoke}/revoke/`, { method: "POST" });
  } catch (error) {
    tokensError.textContent = `Could not revoke the token: ${error.data?.detail || error.message}`;
  }
  await refreshTokens();
});

// A replacement token's command keeps its device's name and profile.
agentName.addEventListener("input", renderCommand);
agentProfile.addEventListener("change", renderCommand);

render(JSON.parse(document.getElementById("devices-initial").textContent));
refreshTokens();
setInterval(refresh, page.refresh_ms);
