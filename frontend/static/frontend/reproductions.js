// Reproductions page: "Launch experiment" posts a paper's headline regime (method and
// baselines) to the experiments API on the chosen testbed, then opens the new experiment.
import { api, apiList, ApiError } from "./api.js";

const page = JSON.parse(document.getElementById("reproductions-data").textContent);
const alertBox = document.getElementById("launch-alert");

function showError(message) {
  alertBox.textContent = message;
  alertBox.hidden = false;
}

async function launch(form) {
  const spec = page.launches[form.dataset.key];
  const choice = form.elements.testbed.value;
  const body = { name: spec.name, algorithm: spec.algorithm, baselines: spec.baselines,
                 config: { ...spec.config } };
  if (choice.startsWith("preset:")) {
    body.preset = choice.slice("preset:".length);
    delete body.config.testbed;
  } else if (choice === "devices") {
    body.devices = (await apiList(page.devices_url)).map((device) => device.id);
    delete body.config.testbed;
  }
  const experiment = await api(page.create_url, { method: "POST", body });
  window.location.assign(page.experiment_url_template.replace(page.id_placeholder, experiment.id));
}

for (const form of document.querySelectorAll("form.launch")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    alertBox.hidden = true;
    try {
      await launch(form);
    } catch (error) {
      const detail = error instanceof ApiError ? JSON.stringify(error.data) : String(error);
      showError(`The experiment was not created: ${detail}`);
      button.disabled = false;
    }
  });
}
