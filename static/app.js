// The dashboard: renders the catalog, launches tasks, and keeps the task table live over Socket.IO.
// Task data is always rendered with textContent, never as markup.
"use strict";

// Which state may replace which is decided on the server (web/lifecycle.py); each task object
// carries a `version` that grows with every change, and the page keeps the highest one.
const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED", "LOST", "UNKNOWN"]);
// Celery's state names as a person reads them; a task's own states (update_state) show by name.
const LABELS = {
  PENDING: "queued", RECEIVED: "received", STARTED: "started", PROGRESS: "running",
  RETRY: "retrying", SUCCESS: "succeeded", FAILURE: "failed", REVOKED: "cancelled",
  REJECTED: "rejected", IGNORED: "ignored", LOST: "lost (worker gone)", UNKNOWN: "outcome unknown",
};
const KNOWN = new Set(Object.keys(LABELS));

const tasks = new Map();   // id -> task object
const rows = new Map();    // id -> <tr>
const titles = new Map();  // Celery task name -> catalog title
// Sent with every state-changing request: the server refuses cookie-authenticated changes without it.
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const VIEWER = document.querySelector('meta[name="user-role"]')?.content === "viewer";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function upsert(task) {
  const old = tasks.get(task.id);
  if (old && (old.version || 0) > (task.version || 0)) return;
  tasks.set(task.id, task);
  render(task);
}

// ---- catalog ---------------------------------------------------------------------------

function inputFor(name, spec, formId) {
  const id = `${formId}-${name}`;
  const wrap = el("div", { class: "field" });
  const label = el("label", { for: id }, spec.title || name);
  let input;
  if (spec.type === "boolean") {
    input = el("input", { id, name, type: "checkbox" });
    input.checked = Boolean(spec.default);
  } else if (spec.type === "integer" || spec.type === "number") {
    input = el("input", { id, name, type: "number", step: spec.type === "integer" ? "1" : "any" });
    if (spec.minimum !== undefined) input.min = spec.minimum;
    if (spec.maximum !== undefined) input.max = spec.maximum;
  } else {
    input = el("input", { id, name, type: "text" });
    if (spec.maxLength !== undefined) input.maxLength = spec.maxLength;
  }
  if (spec.default !== undefined && spec.type !== "boolean") input.value = spec.default;
  input.dataset.type = spec.type;
  wrap.append(label, input);
  return wrap;
}

function readParams(form, schema) {
  const params = {};
  for (const [name, spec] of Object.entries(schema.properties || {})) {
    const input = form.elements[name];
    if (spec.type === "boolean") params[name] = input.checked;
    else if (input.value === "") continue;
    else if (spec.type === "integer" || spec.type === "number") params[name] = Number(input.value);
    else params[name] = input.value;
  }
  return params;
}

async function launch(entry, form, status) {
  status.textContent = "";
  status.className = "launch-status";
  const response = await fetch("/api/tasks", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": CSRF },
    body: JSON.stringify({ task: entry.name, params: readParams(form, entry.params) }),
  }).catch(() => null);
  if (!response) {
    status.textContent = "Could not reach the server.";
    status.className = "launch-status error";
    return;
  }
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (response.status === 202) {
    upsert(body);
    status.textContent = "Launched.";
    return;
  }
  const fields = (body.fields || []).map((f) => `${f.field}: ${f.message}`).join("; ");
  status.textContent = fields ? `${body.error} (${fields})` : body.error;
  status.className = "launch-status error";
}

function renderCatalog(entries) {
  const root = document.getElementById("catalog");
  root.replaceChildren();
  for (const entry of entries) {
    titles.set(entry.task, entry.title);
    const headingId = `task-${entry.name}`;
    const card = el("section", { class: "card", "aria-labelledby": headingId });
    card.append(el("h3", { id: headingId }, entry.title), el("p", { class: "description" }, entry.description));
    const form = el("form", { id: `form-${entry.name}`, novalidate: "" });
    for (const [name, spec] of Object.entries(entry.params.properties || {})) {
      form.append(inputFor(name, spec, form.id));
    }
    const status = el("p", { class: "launch-status", role: "status", "aria-live": "polite" });
    form.append(el("button", { type: "submit" }, "Launch"), status);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      launch(entry, form, status);
    });
    card.append(form);
    root.append(card);
  }
  for (const task of tasks.values()) render(task);  // titles may be new
}

// ---- task table ------------------------------------------------------------------------

function titleOf(task) {
  return titles.get(task.name) || task.name || "unknown task";
}

function seconds(from, to) {
  if (!from) return "";
  const end = to ? Date.parse(to) : Date.now();
  return `${((end - Date.parse(from)) / 1000).toFixed(1)} s`;
}

function buildRow(task) {
  const row = el("tr", { "data-task-id": task.id });
  const name = el("td", { class: "name" });
  name.append(el("span", { class: "title" }), el("code", { class: "id" }, task.id.slice(0, 8)));
  if (task.parent) name.append(el("span", { class: "parent" }, `child of ${task.parent.slice(0, 8)}`));
  const state = el("td", { class: "state" });
  state.append(el("span", { class: "badge" }));
  const progressCell = el("td", { class: "progress" });
  const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" });
  bar.append(el("div", { class: "fill" }));
  progressCell.append(bar, el("span", { class: "percent" }), el("span", { class: "message" }));
  const details = el("td", { class: "details" });
  const time = el("td", { class: "time" });
  const actions = el("td", { class: "actions" });
  const cancel = el("button", { type: "button", class: "cancel" }, "Cancel");
  cancel.addEventListener("click", () => cancelTask(task.id, cancel));
  actions.append(cancel);
  row.append(name, state, progressCell, details, time, actions);
  return row;
}

function placeRow(row, task) {
  const body = document.querySelector("#tasks tbody");
  const created = task.created || "";
  for (const other of body.children) {
    const otherTask = tasks.get(other.dataset.taskId);
    if (other !== row && otherTask && (otherTask.created || "") < created) {
      body.insertBefore(row, other);
      return;
    }
  }
  body.append(row);
}

function renderDetails(cell, task) {
  cell.replaceChildren();
  if (task.error && task.state !== "SUCCESS") {
    cell.append(el("span", { class: "error" }, `${task.error.type}: ${task.error.message}`));
    if (task.error.traceback) {
      const more = el("details");
      more.append(el("summary", {}, "Traceback"), el("pre", {}, task.error.traceback));
      cell.append(more);
    }
  } else if (task.state === "SUCCESS") {
    const text = typeof task.result === "string" && task.result_truncated ? task.result : JSON.stringify(task.result);
    cell.append(el("code", { class: "result" }, text));
    if (task.result_truncated) {
      cell.append(" ", el("a", { href: `/api/tasks/${encodeURIComponent(task.id)}/result`, class: "full-result" },
        "(preview: open the whole result)"));
    }
  }
}

function render(task) {
  let row = rows.get(task.id);
  const isNew = !row;
  if (isNew) {
    row = buildRow(task);
    rows.set(task.id, row);
  }
  const title = titleOf(task);
  const known = KNOWN.has(task.state) ? task.state : "CUSTOM";
  row.className = `state-${known}${task.worker_status ? " not-responding" : ""}`;
  row.querySelector(".title").textContent = title;
  // A retried task waiting for its next attempt is "retrying" to a person, whatever Celery says.
  const waiting = (task.state === "PENDING" || task.state === "RECEIVED") && task.retries > 0;
  let label = waiting ? LABELS.RETRY : LABELS[task.state] || task.state;
  if (task.state === "REVOKED" && task.error && task.error.message === "expired") label = "expired";
  if (task.worker_status && !TERMINAL.has(task.state)) label = `${label} · worker ${task.worker_status}`;
  row.querySelector(".badge").textContent = label;
  const reported = task.progress && Number.isFinite(task.progress.percent) ? task.progress.percent : null;
  const percent = reported ?? (task.state === "SUCCESS" ? 100 : 0);
  const bar = row.querySelector(".bar");
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-label", `Progress of ${title} ${task.id.slice(0, 8)}`);
  row.querySelector(".fill").style.width = `${percent}%`;
  row.querySelector(".percent").textContent = `${Math.round(percent)}%`;
  row.querySelector(".message").textContent = task.progress ? task.progress.message || "" : "";
  renderDetails(row.querySelector(".details"), task);
  row.querySelector(".time").textContent = seconds(task.started || task.created, task.finished)
    + (task.clock_skew ? " (clocks disagree)" : "");
  const cancel = row.querySelector(".cancel");
  cancel.hidden = VIEWER || TERMINAL.has(task.state);
  cancel.setAttribute("aria-label", `Cancel ${title} ${task.id.slice(0, 8)}`);
  if (isNew) placeRow(row, task);
  document.getElementById("no-tasks").hidden = rows.size > 0;
}

async function cancelTask(id, button) {
  button.disabled = true;
  const response = await fetch(`/api/tasks/${encodeURIComponent(id)}/cancel`, {
    method: "POST", headers: { "X-CSRFToken": CSRF },
  }).catch(() => null);
  if (!response || response.status !== 202) button.disabled = false;
}

// ---- live connection -------------------------------------------------------------------

function setConnection(state, text) {
  const badge = document.getElementById("connection");
  badge.className = `connection ${state}`;
  badge.textContent = text;
}

function connect() {
  const socket = io({ reconnectionDelayMax: 5000 });
  socket.on("connect", () => setConnection("live", "Live"));
  socket.on("connect_error", (error) => {
    if (error && error.message === "unauthorized") window.location.assign("/login");  // signed out
  });
  socket.on("disconnect", (reason) => {
    setConnection("reconnecting", "Reconnecting…");
    // The server ends a connection whose access ended (sign-out, removed account, new role), and
    // Socket.IO does not reconnect by itself then: load the page again, which goes to the sign-in
    // page, or shows what the new role may see.
    if (reason === "io server disconnect") window.location.reload();
  });
  socket.io.on("reconnect_attempt", () => setConnection("reconnecting", "Reconnecting…"));
  socket.on("snapshot", (data) => data.tasks.forEach(upsert));
  socket.on("snapshot_error", () => setConnection("reconnecting", "Live, but Redis is unavailable"));
  socket.on("tasks", (data) => data.tasks.forEach(upsert));
}

// Durations of running tasks keep counting between pushes.
setInterval(() => {
  for (const task of tasks.values()) {
    if (!TERMINAL.has(task.state)) {
      rows.get(task.id).querySelector(".time").textContent = seconds(task.started || task.created, null);
    }
  }
}, 1000);

fetch("/api/catalog")
  .then((response) => response.json())
  .then((data) => renderCatalog(data.tasks))
  .catch(() => { document.getElementById("catalog").textContent = "Could not load the catalog."; });
connect();
