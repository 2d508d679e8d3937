// The launch forms, one per catalog entry: helper E replaces this port of the old page's forms.
import { el } from "./dom.js";

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

async function launch(entry, form, status, ctx) {
  status.textContent = "";
  status.className = "launch-status";
  const { status: code, body } = await ctx.api("POST", ctx.config.apiTasks,
    { task: entry.name, params: readParams(form, entry.params) });
  if (code === 202) {
    ctx.tasks.upsert(body);
    status.textContent = "Launched.";
    return;
  }
  const fields = (body.fields || []).map((f) => `${f.field}: ${f.message}`).join("; ");
  status.textContent = fields ? `${body.error} (${fields})` : body.error;
  status.className = "launch-status error";
}

export async function mount(root, ctx) {
  root.replaceChildren(el("p", {}, "Loading the catalog…"));
  const entries = await ctx.catalog;
  if (!entries) {
    root.replaceChildren(el("p", { class: "load-error" }, "Could not load the catalog."));
    return;
  }
  const list = el("div", { class: "catalog" });
  for (const entry of entries) {
    const headingId = `task-${entry.name}`;
    const card = el("section", { class: "card", "aria-labelledby": headingId });
    card.append(el("h3", { id: headingId }, entry.title), el("p", { class: "description" }, entry.description));
    const form = el("form", { id: `form-${entry.name}`, novalidate: "" });
    for (const [name, spec] of Object.entries(entry.params.properties || {})) form.append(inputFor(name, spec, form.id));
    const status = el("p", { class: "launch-status", role: "status", "aria-live": "polite" });
    form.append(el("button", { type: "submit" }, "Launch"), status);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      launch(entry, form, status, ctx);
    });
    card.append(form);
    list.append(card);
  }
  root.replaceChildren(list);
}
