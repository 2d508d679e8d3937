// The launch forms: one per catalog entry, built from the entry's JSON Schema (labels, help,
// constraints), checked in the browser against that same schema, one task per click.
//
// An emptied field is an error (the form sends every field; the server's defaults are for API
// callers that leave a parameter out), unless the schema allows null for it. Sentences come from
// the catalog (entry.messages), the same the server answers a 422 with.
import { el, setText } from "./dom.js";
import { enable, needsServer } from "./live.js";
import { followLaunch, spoken } from "./announce.js";
import { stateLabel } from "./state.js";

const forms = new Map();  // catalog name -> LaunchForm
let mounted = null;       // resolves once the forms exist (prefill may be called before)
let resolveMounted = null;

// The JSON Schema validator (static/vendor, built from package.json). Without it the server's
// answer is the only check: the forms still work.
const validatorModule = import("../vendor/json-schema.js").catch((error) => {
  console.warn("JSON Schema validator not loaded; the server validates alone", error);
  return null;
});

function shortId(id) {
  return String(id).slice(0, 8);
}

// A random key per submission (crypto.randomUUID needs a secure context; getRandomValues does not).
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function types(spec) {
  return Array.isArray(spec.type) ? spec.type : [spec.type];
}

function nullable(spec) {
  return types(spec).includes("null");
}

function plain(value) {
  return typeof value === "number" ? String(value) : JSON.stringify(value);
}

class LaunchForm {
  constructor(entry, ctx, Validator) {
    this.entry = entry;
    this.ctx = ctx;
    this.properties = entry.params.properties || {};
    this.messages = entry.messages || { required: "This field is required", params: {} };
    this.inFlight = false;
    this.fields = new Map();  // param -> {input, error, help, wrap, spec}
    const required = Object.keys(this.properties).filter((name) => !nullable(this.properties[name]));
    // The catalog's schema as the form sees it: every field is sent, so every field is required.
    this.validator = null;
    try {
      if (Validator) {
        this.validator = new Validator(
          { ...entry.params, required: [...new Set([...(entry.params.required || []), ...required])] }, "2020-12", false);
      }
    } catch (error) {
      console.warn(`the schema of ${entry.name} cannot be checked in the browser; the server checks it`, error);
    }
    this.build();
  }

  build() {
    const { entry } = this;
    const base = `launch-${entry.name}`;
    const headingId = `${base}-heading`;
    this.node = el("section", { class: "card", "aria-labelledby": headingId });
    this.form = el("form", { id: base, novalidate: true, "aria-labelledby": headingId });
    this.summary = el("div", { class: "error-summary", id: `${base}-summary`, role: "alert", hidden: true });
    for (const [name, spec] of Object.entries(this.properties)) this.form.append(this.field(name, spec, base));
    this.button = needsServer(el("button", { type: "submit" }, "Launch"));
    this.status = el("p", { class: "launch-status", role: "status" });
    this.offer = el("div", { class: "attach-offer", hidden: true, tabindex: "-1" });
    this.form.append(this.summary, this.button, this.status, this.offer);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit(false);
    });
    this.node.append(el("h3", { id: headingId }, entry.title), el("p", { class: "description" }, entry.description),
      this.form);
  }

  field(name, spec, base) {
    const id = `${base}-${name}`;
    const helpId = `${id}-help`;
    const errorId = `${id}-error`;
    const label = spec.title || name;
    let input;
    const kinds = types(spec);
    if (Array.isArray(spec.enum)) {
      input = el("select", { id, name });
      if (nullable(spec)) input.append(el("option", { value: "" }, "(none)"));
      for (const value of spec.enum) input.append(el("option", { value: plain(value) }, String(value)));
    } else if (kinds.includes("boolean")) {
      input = el("input", { id, name, type: "checkbox" });
    } else if (kinds.includes("integer") || kinds.includes("number")) {
      input = el("input", { id, name, type: "number", inputmode: kinds.includes("integer") ? "numeric" : "decimal",
        step: kinds.includes("integer") ? "1" : "any", min: spec.minimum, max: spec.maximum });
    } else {
      input = el("input", { id, name, type: "text", maxlength: spec.maxLength, minlength: spec.minLength,
        autocomplete: "off" });
    }
    if (!nullable(spec) && !kinds.includes("boolean")) input.setAttribute("aria-required", "true");
    this.setValue(input, spec, spec.default);
    const hint = this.messages.params?.[name];
    const help = [spec.description, hint ? `${hint}.` : "", spec.default !== undefined ? `Default: ${plain(spec.default)}.` : ""]
      .filter(Boolean).join(" ");
    const helpNode = el("p", { class: "help", id: helpId }, help);
    const error = el("p", { class: "field-error", id: errorId, hidden: true });
    input.setAttribute("aria-describedby", helpId);
    const wrap = el("div", { class: "field" }, el("label", { for: id }, label), input, helpNode, error);
    input.addEventListener("input", () => this.clearField(name));
    input.addEventListener("change", () => this.clearField(name));
    this.fields.set(name, { input, error, help: helpNode, wrap, spec, label, helpId, errorId });
    return wrap;
  }

  setValue(input, spec, value) {
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value === undefined || value === null ? "" : (Array.isArray(spec.enum) ? plain(value) : String(value));
  }

  // The form's values: a field left empty is absent (an error unless the schema allows null).
  read() {
    const params = {};
    const unreadable = [];
    for (const [name, { input, spec }] of this.fields) {
      const kinds = types(spec);
      if (input.type === "checkbox") {
        params[name] = input.checked;
      } else if (input.validity && input.validity.badInput) {
        unreadable.push(name);  // text in a number field: the browser reports it as empty
      } else if (input.value === "") {
        if (nullable(spec)) params[name] = null;
      } else if (Array.isArray(spec.enum)) {
        const value = spec.enum.find((option) => plain(option) === input.value);
        params[name] = value === undefined ? input.value : value;
      } else if (kinds.includes("integer") || kinds.includes("number")) {
        params[name] = Number(input.value);
      } else {
        params[name] = input.value;
      }
    }
    return { params, unreadable };
  }

  // Errors of the browser's check: [{param, message}] in the form's order.
  check(params, unreadable) {
    const errors = new Map();
    for (const name of unreadable) errors.set(name, this.messages.params?.[name] || "Enter a valid value");
    if (this.validator) {
      const result = this.validator.validate(params);
      for (const error of result.valid ? [] : result.errors) {
        if (error.keyword === "required") {
          for (const [name] of this.fields) if (!(name in params) && !errors.has(name)) errors.set(name, this.messages.required);
          continue;
        }
        const name = decodeURIComponent(error.instanceLocation.replace(/^#\/?/, "").split("/")[0] || "");
        if (!name || !this.fields.has(name) || errors.has(name)) continue;
        errors.set(name, this.messages.params?.[name] || error.error);
      }
    }
    return [...this.fields.keys()].filter((name) => errors.has(name)).map((name) => ({ param: name, message: errors.get(name) }));
  }

  clearField(name) {
    const field = this.fields.get(name);
    if (!field || field.error.hidden) return;
    field.error.hidden = true;
    setText(field.error, "");
    field.input.removeAttribute("aria-invalid");
    field.input.setAttribute("aria-describedby", field.helpId);
    field.wrap.classList.remove("invalid");
  }

  clearErrors() {
    for (const name of this.fields.keys()) this.clearField(name);
    this.summary.hidden = true;
    this.summary.replaceChildren();
  }

  // Marks each field of `errors` ([{param, label?, message}]) and lists them all in the summary;
  // focus goes to the first marked field. Errors naming no field of the form show in the summary only.
  showErrors(errors, lead) {
    this.clearErrors();
    const items = [];
    let first = null;
    for (const error of errors) {
      const field = this.fields.get(error.param);
      const text = String(error.message || "Enter a valid value");
      const message = text.charAt(0).toUpperCase() + text.slice(1);  // the API's field messages may be phrases
      const sentence = /[.!?]$/.test(message) ? message : `${message}.`;
      if (field) {
        field.error.hidden = false;
        setText(field.error, sentence);
        field.input.setAttribute("aria-invalid", "true");
        field.input.setAttribute("aria-describedby", `${field.errorId} ${field.helpId}`);
        field.wrap.classList.add("invalid");
        first = first || field.input;
        const link = el("a", { href: `#${field.input.id}` }, `${field.label}: ${sentence}`);
        link.addEventListener("click", (event) => {
          event.preventDefault();
          field.input.focus();
        });
        items.push(el("li", {}, link));
      } else {
        items.push(el("li", {}, error.label ? `${error.label}: ${sentence}` : sentence));
      }
    }
    const count = errors.length;
    this.summary.replaceChildren(
      el("p", {}, lead || (count === 1 ? "One field needs a change:" : `${count} fields need a change:`)),
      el("ul", {}, ...items));
    this.summary.hidden = false;
    if (first) first.focus();
  }

  setStatus(text, kind = "") {
    this.status.className = `launch-status${kind ? ` ${kind}` : ""}`;
    this.status.replaceChildren(...(Array.isArray(text) ? text : [text]));
  }

  async submit(duplicate) {
    if (this.inFlight) return;
    this.offer.hidden = true;
    this.offer.replaceChildren();
    const { params, unreadable } = this.read();
    const errors = this.check(params, unreadable);
    if (errors.length) {
      this.setStatus("");
      this.showErrors(errors);
      return;
    }
    this.clearErrors();
    this.inFlight = true;
    const hadFocus = document.activeElement === this.button;
    this.button.disabled = true;
    this.form.setAttribute("aria-busy", "true");
    this.setStatus("Launching…");
    const body = { task: this.entry.name, params };
    if (duplicate) body.duplicate = true;
    let answer;
    try {
      answer = await this.ctx.api("POST", this.ctx.config.apiTasks, body, { "Idempotency-Key": idempotencyKey() });
    } finally {
      this.inFlight = false;
      enable(this.button);  // stays disabled while the page is not live
      this.form.removeAttribute("aria-busy");
      // A disabled button loses the focus: give it back, so a keyboard user stays where they were.
      if (hadFocus && (document.activeElement === document.body || !document.activeElement)) this.button.focus();
    }
    this.answered(answer);
  }

  answered({ status, body }) {
    const title = this.entry.title;
    if (status === 202 && body && body.id) {
      this.ctx.tasks.upsert(body);
      const link = el("a", { href: `/tasks/${encodeURIComponent(body.id)}` }, `${title} (${shortId(body.id)})`);
      this.setStatus(["Launched ", link, "."], "ok");
      spoken();  // the status region says it: the announcer's next message waits its turn
      followLaunch(this.ctx, body, title);
      return;
    }
    if (status === 409 && body && body.attach && body.attach.id) {
      this.offerAttach(body.attach);
      return;
    }
    if (status === 422 && Array.isArray(body.fields) && body.fields.length) {
      this.setStatus("");
      this.showErrors(body.fields.map((field) => ({
        // "params.tags[2].x" (a nested value, such as text that is not Unicode) is the field "tags".
        param: field.param || String(field.field || "").replace(/^params\./, "").split(/[.[]/)[0],
        label: field.label || field.field,
        message: field.message,
      })));
      return;
    }
    const reason = (body && body.error) || (status === 0 ? "Could not reach the server" : `HTTP ${status}`);
    const sentence = /[.!?]$/.test(reason) ? reason : `${reason}.`;
    this.setStatus(status === 403 ? "Your role cannot launch tasks." : `Not launched: ${sentence}`, "error");
  }

  // 409: the same task with the same parameters is already queued or running.
  offerAttach(task) {
    const state = stateLabel(task);
    const follow = el("button", { type: "button" }, "Follow that one");
    const another = needsServer(el("button", { type: "button" }, "Launch another"));
    follow.addEventListener("click", () => this.ctx.navigate(`/tasks/${encodeURIComponent(task.id)}`));
    another.addEventListener("click", () => {
      this.offer.hidden = true;
      this.submit(true);
    });
    this.setStatus("");
    const message = el("p", {}, `An identical ${this.entry.title} is already ${state} (${shortId(task.id)}).`);
    this.offer.replaceChildren(message, el("div", { class: "actions" }, follow, another));
    this.offer.hidden = false;
    this.offer.setAttribute("role", "group");
    this.offer.setAttribute("aria-label", "An identical task exists");
    follow.focus();
  }

  // Fills the form with `params`; the `masked` names are emptied and marked to be entered again.
  fill(params, masked) {
    this.clearErrors();
    this.offer.hidden = true;
    for (const [name, field] of this.fields) {
      if (masked.includes(name)) this.setValue(field.input, field.spec, "");
      else if (params && name in params) this.setValue(field.input, field.spec, params[name]);
    }
    const hidden = masked.filter((name) => this.fields.has(name)).map((name) => this.fields.get(name).label);
    const first = hidden.length ? this.fields.get(masked.find((name) => this.fields.has(name))).input
      : this.fields.values().next().value?.input || this.button;
    if (hidden.length) {
      this.showErrors(masked.filter((name) => this.fields.has(name)).map((name) => ({
        param: name, message: "Enter this value again: it was hidden in the task's arguments" })),
      `Filled in from the earlier task. ${hidden.length === 1 ? "One value was" : `${hidden.length} values were`} hidden: re-enter ${hidden.join(", ")}.`);
    } else {
      this.setStatus("Filled in from the earlier task: change what you need, then launch.");
    }
    this.node.scrollIntoView({ block: "start" });
    first.focus();
  }
}

export async function mount(root, ctx) {
  if (!mounted) mounted = new Promise((resolve) => { resolveMounted = resolve; });
  if (ctx.user.role === "viewer") {
    root.replaceChildren(el("p", { class: "role-note" },
      "You are signed in as a viewer: you can follow tasks here, but not launch or cancel them."));
    resolveMounted();  // no forms: prefill answers false
    return;
  }
  root.replaceChildren(el("p", {}, "Loading the catalog…"));
  const [entries, module] = await Promise.all([ctx.catalog, validatorModule]);
  if (!entries) {
    root.replaceChildren(el("p", { class: "load-error" }, "Could not load the catalog. Reload the page to try again."));
    resolveMounted();
    return;
  }
  const list = el("div", { class: "catalog" });
  forms.clear();
  for (const entry of entries) {
    const form = new LaunchForm(entry, ctx, module ? module.Validator : null);
    forms.set(entry.name, form);
    list.append(form.node);
  }
  root.replaceChildren(list);
  resolveMounted();
}

// Fills the launch form of `catalogName` with `params` and focuses it; `masked` lists the
// parameters whose values were hidden (they are emptied and marked to be entered again).
// Waits for the forms when they are still being built. Returns false for an unknown task.
export async function prefill(catalogName, params, masked = []) {
  const box = document.getElementById("launch-box");  // folded on a phone: a re-run opens it
  if (box) box.open = true;
  if (!mounted) mounted = new Promise((resolve) => { resolveMounted = resolve; });
  await mounted;
  const form = forms.get(catalogName);
  if (!form) return false;
  form.fill(params || {}, Array.isArray(masked) ? masked : []);
  return true;
}
