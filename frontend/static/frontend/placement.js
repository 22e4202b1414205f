// A distributed run's placement table and its "waiting for devices" line, inside its run card.

const MAX_WORKERS_SHOWN = 12;

function workersText(workers) {
  if (!workers || workers.length === 0) return "–";
  const shown = workers.slice(0, MAX_WORKERS_SHOWN).join(", ");
  return workers.length > MAX_WORKERS_SHOWN ? `${shown} … (+${workers.length - MAX_WORKERS_SHOWN})` : shown;
}

function cell(tag, text) {
  const element = document.createElement(tag);
  element.textContent = text;
  return element;
}

/** Show (or refresh) ``run``'s placement in ``card``; nothing for an emulated run. */
export function renderPlacement(card, run) {
  let box = card.querySelector(".placement");
  if (!run.placement || run.placement.length === 0) {
    box?.remove();
    return;
  }
  if (!box) {
    box = document.createElement("div");
    box.className = "placement";
    card.appendChild(box);
  }
  const waiting = document.createElement("p");
  waiting.className = "waiting";
  if (run.state === "queued" && run.waiting_for?.length) {
    waiting.textContent = "Waiting for devices: "
      + run.waiting_for.map((wait) => `${wait.name} (${wait.why})`).join(", ");
  }
  const table = document.createElement("table");
  table.className = "placement-table";
  // A single-device method (no roles) runs whole on its one device.
  const single = run.placement.length === 1 && !(run.placement[0].workers || []).length;
  table.append(cell("caption", single
    ? `Placement: a single-device method, the whole run on ${run.placement[0].name}`
    : "Placement"));
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  for (const title of ["Rank", "Role", "Device", "Workers"]) {
    const th = cell("th", title);
    th.scope = "col";
    headRow.append(th);
  }
  head.append(headRow);
  const body = document.createElement("tbody");
  const states = new Map((run.jobs || []).map((job) => [job.rank, job.state]));
  for (const slot of run.placement) {
    const row = document.createElement("tr");
    row.dataset.rank = slot.rank;
    if (states.has(slot.rank)) row.dataset.state = states.get(slot.rank);
    row.append(cell("td", String(slot.rank)), cell("td", slot.role), cell("td", slot.name),
      cell("td", workersText(slot.workers)));
    body.append(row);
  }
  table.append(head, body);
  box.replaceChildren(...(waiting.textContent ? [waiting] : []), table);
}
