// New experiment form, built from the chosen algorithm's JSON schema (GET /api/v1/algorithms/).
import { api, apiList, flattenErrors } from "./api.js";

const page = JSON.parse(document.getElementById("new-experiment-data").textContent);
const form = document.getElementById("experiment-form");
const algorithmSelect = document.getElementById("algorithm");
const algorithmInfo = document.getElementById("algorithm-info");
const baselinesBox = document.getElementById("baselines");
const configBox = document.getElementById("config-fields");
const devicesBox = document.getElementById("devices");
const hostSelect = document.getElementById("host");
const formAlert = document.getElementById("form-alert");
const submitButton = document.getElementById("submit");

/** Config keys the form handles itself rather than as generic schema fields. */
const OWN_WIDGETS = new Set(["testbed"]);

let algorithms = [];
let current = null; // the chosen algorithm's catalogue entry

function resolve(schema, node) {
  let out = node;
  while (out && (out.$ref || (out.allOf && out.allOf.length === 1))) {
    const ref = out.$ref || out.allOf[0].$ref;
    const target = ref ? schema.$defs?.[ref.split("/").pop()] : out.allOf[0];
    const { $ref, allOf, ...rest } = out;
    out = { ...target, ...rest };
  }
  return out;
}

/** The field's type, enum and whether it accepts null, from a pydantic JSON schema property. */
function describeField(schema, property) {
  const node = resolve(schema, property);
  let nullable = false;
  let core = node;
  if (node.anyOf) {
    const options = node.anyOf.map((option) => resolve(schema, option));
    nullable = options.some((option) => option.type === "null");
    const rest = options.filter((option) => option.type !== "null");
    core = rest.length === 1 ? { ...rest[0], title: node.title, description: node.description } : { type: "json" };
  }
  let type = core.type || "json";
  if (core.enum || core.const !== undefined) type = "enum";
  if (Array.isArray(type)) type = "json";
  return { ...core, type, nullable, enum: core.enum || (core.const !== undefined ? [core.const] : null) };
}

function element(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function errorSlot(path) {
  return element("p", { class: "error", id: `error-${path}`, "data-error-for": path, role: "alert" });
}

/** One labelled input for config key `key`; its value is read back by readConfig(). */
function renderField(key, property, defaultValue) {
  const info = describeField(current.schema, property);
  const path = `config.${key}`;
  const id = `field-${key}`;
  const wrapper = element("div", { class: "field", "data-field": path });
  const label = element("label", { for: id }, key); // the config key, as the API and CLI spell it
  const help = info.description ? element("span", { class: "help", id: `${id}-help` }, info.description) : null;
  let input;
  if (info.type === "boolean") {
    wrapper.classList.add("checkbox");
    input = element("input", { type: "checkbox", id, name: path });
    input.checked = Boolean(defaultValue);
    wrapper.append(input, label);
  } else {
    if (info.type === "enum") {
      input = element("select", { id, name: path });
      if (info.nullable) input.append(element("option", { value: "" }, "(none)"));
      for (const option of info.enum) input.append(element("option", { value: String(option) }, String(option)));
      input.value = defaultValue === null || defaultValue === undefined ? "" : String(defaultValue);
      input.dataset.options = JSON.stringify(info.enum); // typed: a choice of 4, 8, 32 is sent as a number
    } else if (info.type === "integer" || info.type === "number") {
      const min = info.minimum ?? (info.exclusiveMinimum !== undefined ? info.exclusiveMinimum : undefined);
      const max = info.maximum ?? info.exclusiveMaximum;
      input = element("input", {
        type: "number", id, name: path, min, max, step: info.type === "integer" ? "1" : "any", inputmode: "decimal",
      });
      input.value = defaultValue === null || defaultValue === undefined ? "" : String(defaultValue);
    } else if (info.type === "string") {
      input = element("input", { type: "text", id, name: path });
      input.value = defaultValue ?? "";
    } else {
      input = element("textarea", { id, name: path, spellcheck: "false", class: "mono" });
      input.value = defaultValue === undefined ? "" : JSON.stringify(defaultValue);
    }
    wrapper.append(label, input);
  }
  // Names are prefixed ("config.dataset"): a bare "dataset" would clobber form.dataset.
  input.dataset.key = key;
  input.dataset.kind = info.type;
  input.dataset.nullable = info.nullable ? "1" : "";
  if (help) {
    input.setAttribute("aria-describedby", `${id}-help error-${path}`);
    wrapper.append(help);
  } else {
    input.setAttribute("aria-describedby", `error-${path}`);
  }
  wrapper.append(errorSlot(path));
  return wrapper;
}

/** The config object from the inputs; values the server must judge are passed on as typed. */
function readConfig() {
  const config = {};
  for (const input of configBox.querySelectorAll("[data-kind]")) {
    const { key, kind, nullable } = input.dataset;
    const raw = input.type === "checkbox" ? input.checked : input.value;
    if (kind === "boolean") config[key] = raw;
    else if (raw === "" && (nullable || kind === "integer" || kind === "number")) config[key] = null;
    else if (kind === "enum") config[key] = JSON.parse(input.dataset.options).find((option) => String(option) === raw) ?? raw;
    else if (kind === "integer" || kind === "number") config[key] = Number.isFinite(Number(raw)) ? Number(raw) : raw;
    else if (kind === "json") {
      try {
        config[key] = JSON.parse(raw);
      } catch {
        config[key] = raw; // the server answers with a 400 naming this field
      }
    } else config[key] = raw;
  }
  return config;
}

function renderAlgorithm() {
  current = algorithms.find((algorithm) => algorithm.name === algorithmSelect.value);
  baselinesBox.replaceChildren();
  configBox.replaceChildren();
  if (!current) return;
  algorithmInfo.textContent = [current.summary, current.paper].filter(Boolean).join(" — ");
  if (current.baselines.length === 0) {
    baselinesBox.append(element("span", { class: "muted" }, "This method has no baselines."));
  }
  for (const baseline of current.baselines) {
    const id = `baseline-${baseline}`;
    const label = element("label", { for: id });
    const box = element("input", { type: "checkbox", id, name: "baselines", value: baseline });
    box.checked = true;
    label.append(box, document.createTextNode(baseline));
    baselinesBox.append(label);
  }
  const properties = current.schema.properties || {};
  const defaults = current.defaults || {};
  for (const [key, property] of Object.entries(properties)) {
    if (OWN_WIDGETS.has(key)) continue;
    configBox.append(renderField(key, property, key in defaults ? defaults[key] : property.default));
  }
  const testbedDefault = defaults.testbed;
  if (typeof testbedDefault === "string") document.getElementById("preset").value = testbedDefault;
}

async function loadDevices() {
  let devices = [];
  try {
    devices = await apiList(page.devices_url);
  } catch (error) {
    devicesBox.replaceChildren(element("span", { class: "error" }, `Could not load devices: ${error.message}`));
    return;
  }
  devicesBox.replaceChildren();
  if (devices.length === 0) {
    devicesBox.append(element("span", { class: "muted" }, "No registered devices yet; use a preset."));
  }
  for (const device of devices) {
    const id = `device-${device.id}`;
    const label = element("label", { for: id });
    const box = element("input", { type: "checkbox", id, name: "devices", value: device.id });
    label.append(box, document.createTextNode(`${device.name} (${device.kind}, ${device.status})`));
    devicesBox.append(label);
    hostSelect.append(element("option", { value: device.id }, `${device.name} (${device.kind}, ${device.status})`));
  }
}

function clearErrors() {
  formAlert.textContent = "";
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  for (const field of form.querySelectorAll(".has-error")) field.classList.remove("has-error");
}

/** The error slot for a dotted path, falling back to its closest parent ("config.testbed.0" → "config.testbed"). */
function slotFor(path) {
  const parts = path.split(".");
  while (parts.length) {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(parts.join("."))}"]`);
    if (slot) return slot;
    parts.pop();
  }
  return null;
}

function showErrors(data) {
  const unplaced = [];
  for (const [path, message] of Object.entries(flattenErrors(data))) {
    const slot = slotFor(path);
    if (slot) {
      slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
      slot.closest(".field, fieldset")?.classList.add("has-error");
    } else {
      unplaced.push(path === "non_field_errors" || path === "detail" ? message : `${path}: ${message}`);
    }
  }
  formAlert.textContent = unplaced.length
    ? unplaced.join(" ")
    : "Please correct the fields marked below.";
  const first = form.querySelector(".has-error input, .has-error select, .has-error textarea");
  if (first) first.focus();
}

function requestBody() {
  const body = {
    name: document.getElementById("name").value,
    algorithm: algorithmSelect.value,
    baselines: [...baselinesBox.querySelectorAll("input:checked")].map((box) => box.value),
    config: readConfig(),
  };
  if (form.querySelector('input[name="testbed-mode"]:checked').value === "devices") {
    body.devices = [...devicesBox.querySelectorAll("input:checked")].map((box) => box.value);
  } else {
    body.preset = document.getElementById("preset").value;
  }
  if (hostSelect.value) body.host = hostSelect.value;
  const execution = document.getElementById("execution")?.value;
  if (execution && execution !== "emulated") body.execution = execution;
  return body;
}

function syncTestbedMode() {
  const mode = form.querySelector('input[name="testbed-mode"]:checked').value;
  document.getElementById("testbed-devices").hidden = mode !== "devices";
  document.getElementById("testbed-preset").hidden = mode !== "preset";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  submitButton.disabled = true;
  try {
    const experiment = await api(page.create_url, { method: "POST", body: requestBody() });
    window.location.assign(page.experiment_url_template.replace(page.id_placeholder, experiment.id));
  } catch (error) {
    if (error.status === 400) showErrors(error.data);
    else formAlert.textContent = `The server answered ${error.status}: ${error.data?.detail || error.message}`;
    submitButton.disabled = false;
  }
});

for (const radio of form.querySelectorAll('input[name="testbed-mode"]')) radio.addEventListener("change", syncTestbedMode);
algorithmSelect.addEventListener("change", () => {
  clearErrors();
  renderAlgorithm();
});

async function start() {
  try {
    algorithms = await apiList(page.algorithms_url);
  } catch (error) {
    formAlert.textContent = `Could not load the algorithm catalogue: ${error.message}`;
    return;
  }
  algorithmSelect.replaceChildren(...algorithms.map((algorithm) => element("option", { value: algorithm.name }, algorithm.name)));
  if (page.initial_algorithm && algorithms.some((algorithm) => algorithm.name === page.initial_algorithm)) {
    algorithmSelect.value = page.initial_algorithm;
  }
  renderAlgorithm();
  syncTestbedMode();
  await loadDevices();
  form.setAttribute("data-ready", "1");
  submitButton.disabled = false;
}

start();
