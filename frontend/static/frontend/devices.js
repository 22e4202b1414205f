// Devices page: issue an enrolment token and keep the status column live.
import { api, apiList } from "./api.js";

const page = JSON.parse(document.getElementById("devices-data").textContent);
const tokenButton = document.getElementById("create-token");
const tokenBox = document.getElementById("token-box");
const tokenError = document.getElementById("token-error");
const agentName = document.getElementById("agent-name");
const agentProfile = document.getElementById("agent-profile");
const command = document.getElementById("agent-command");
let token = "";

/** Quote a shell word only when it needs it. */
function shellWord(word) {
  return /^[A-Za-z0-9_./:@=+-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

function renderCommand() {
  const server = window.location.origin;
  command.textContent = ["python", "-m", "agents", "run", "--server", server, "--token", token,
    "--name", agentName.value || "my-device", "--profile", agentProfile.value].map(shellWord).join(" ");
}

tokenButton.addEventListener("click", async () => {
  tokenButton.disabled = true;
  tokenError.textContent = "";
  try {
    const answer = await api(page.enrolment_tokens_url, { method: "POST", body: { ttl_hours: 24 } });
    token = answer.token;
    document.getElementById("token-value").textContent = token;
    document.getElementById("token-expiry").textContent = new Date(answer.expires_at).toLocaleString();
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

/** Refresh the status and last-heartbeat cells of the rows the server rendered. */
async function refreshStatus() {
  try {
    const devices = await apiList(page.devices_url);
    for (const device of devices) {
      const row = document.querySelector(`tr[data-device-id="${device.id}"]`);
      if (!row) continue;
      const badge = row.querySelector(".status .badge");
      badge.className = `badge ${device.status}`;
      badge.textContent = device.status;
      const seen = row.querySelector(".last-seen");
      seen.textContent = device.last_seen ? new Date(device.last_seen).toLocaleString() : "never";
    }
  } catch {
    // A missed refresh is harmless; the next one retries.
  }
}

if (document.querySelector("tr[data-device-id]")) setInterval(refreshStatus, page.refresh_ms);
