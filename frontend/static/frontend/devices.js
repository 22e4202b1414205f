// Devices page: the device table kept live from GET /api/v1/devices/, and enrolment tokens.
import { api, apiList } from "./api.js";

const page = JSON.parse(document.getElementById("devices-data").textContent);
const rows = document.getElementById("device-rows");
const emptyRow = rows.querySelector(".empty").closest("tr");
const tokenButton = document.getElementById("create-token");
const tokenBox = document.getElementById("token-box");
const tokenError = document.getElementById("token-error");
const agentName = document.getElementById("agent-name");
const agentProfile = document.getElementById("agent-profile");
const command = document.getElementById("agent-command");
let token = "";

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
    seen,
  );
  return tr;
}

function render(devices) {
  rows.replaceChildren(...(devices.length ? devices.map(deviceRow) : [emptyRow]));
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
  command.textContent = ["python", "-m", "agents", "run", "--server", window.location.origin,
    "--token", token, "--name", agentName.value || "my-device", "--profile", agentProfile.value]
    .map(shellWord).join(" ");
}

tokenButton.addEventListener("click", async () => {
  tokenButton.disabled = true;
  tokenError.textContent = "";
  try {
    const answer = await api(page.enrolment_tokens_url, { method: "POST", body: { ttl_hours: 24 } });
    token = answer.token;
    document.getElementById("token-value").textContent = token;
    document.getElementById("token-expiry").textContent = timestamp(answer.expires_at);
    renderCommand();
    tokenBox.hidden = false;
  } catch (error) {
    tokenError.textContent = `Could not create a token: ${error.data?.detail || error.message}`;
  } finally {
    tokenButton.disabled = false;
  }
});
agentName.addEventListener("input", renderCommand);
agentProfile.addEventListener("change", renderCommand);

render(JSON.parse(document.getElementById("devices-initial").textContent));
setInterval(refresh, page.refresh_ms);
