// The task detail view (/tasks/<id>): everything the dashboard knows of one task, kept live.
//
// Sections are rebuilt only when what they show changed, so a progress update does not take the
// focus from a button, and the times tick once a second while the task runs and the page is live.
import { followLaunch } from "./announce.js";
import { el, setText, visible } from "./dom.js";
import { enable, needsServer } from "./live.js";
import { finished, stateClass, stateLabel } from "./state.js";
import { duration, ran, waited } from "./table.js";

const SECOND = 1000;
// An error's message is shown in a preview of at most this many lines and characters; the whole
// of it (up to the server's 20,000 characters) on demand, in a box that scrolls by itself.
const MESSAGE_LINES = 4;
const MESSAGE_CHARS = 400;

// The start of `text` as the error's preview shows it, or null when it fits whole.
export function messagePreview(text) {
  const lines = text.split("\n");
  let cut = lines.length > MESSAGE_LINES ? lines.slice(0, MESSAGE_LINES).join("\n") : text;
  if (cut.length > MESSAGE_CHARS) cut = cut.slice(0, MESSAGE_CHARS);
  return cut.length < text.length ? `${cut.trimEnd()}…` : null;
}

function shortId(id) {
  return String(id).slice(0, 8);
}

function taskUrl(id) {
  return `/tasks/${encodeURIComponent(id)}`;
}

// "30 Nov 2026, 14:03:07.412" in the reader's locale, or "" for no time.
function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const text = date.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hour12: false });
  return `${text}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

function timeNode(iso, missing = "—") {
  return iso ? el("time", { datetime: iso }, when(iso)) : el("span", { class: "muted" }, missing);
}

function pretty(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch (error) {
    return String(value);
  }
}

// A block of code that scrolls in its own box, reachable by keyboard (a named, focusable region).
function codeBlock(text, name, extra = "") {
  return el("pre", { class: `code ${extra}`.trim(), tabindex: "0", role: "region", "aria-label": name },
    el("code", {}, visible(text)));
}

// Copies `text`; navigator.clipboard where the page may (a secure context), else a hidden textarea.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) {
      // permission refused: try the old way
    }
  }
  const area = el("textarea", { class: "visually-hidden", readonly: true, "aria-hidden": "true" });
  area.value = text;
  const focused = document.activeElement;
  document.body.append(area);
  area.select();
  let done = false;
  try {
    done = document.execCommand("copy");
  } catch (error) {
    done = false;
  }
  area.remove();
  if (focused && typeof focused.focus === "function") focused.focus();
  return done;
}

// A "Copy …" button with its own status line ("Copied.").
function copyButton(label, getText) {
  const note = el("span", { class: "copy-note", role: "status" });
  const button = el("button", { type: "button", class: "copy" }, label);
  button.addEventListener("click", async () => {
    const ok = await copyText(getText());
    setText(note, ok ? "Copied." : "Could not copy: select the text and copy it by hand.");
    setTimeout(() => setText(note, ""), 4000);
  });
  return el("span", { class: "copy-wrap" }, button, note);
}

function row(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

class Detail {
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.id = ctx.route.id;
    this.task = null;
    this.children = [];
    this.childrenTotal = 0;
    this.shown = new Map();   // section name -> key of what it shows
    this.sections = new Map();
    this.timer = null;
    this.gone = false;
    this.fetching = 0;
    this.heading = el("h2", { id: "detail-heading", tabindex: "-1" }, "Task");
    this.body = el("div", { class: "detail-body" }, el("p", { class: "muted" }, "Loading the task…"));
    root.replaceChildren(el("article", { class: "detail", "aria-labelledby": "detail-heading" },
      el("p", { class: "back" }, el("a", { href: "/" }, "All tasks")), this.heading, this.body));
    this.titleBefore = document.title;
    this.off = [
      ctx.tasks.subscribe((changed) => this.changed(changed)),
      ctx.on("titles", () => this.render(true)),
      ctx.on("live", () => {
        if (this.task) this.load();
        this.tick();
      }),
      ctx.on("stale", () => this.stopTimer()),
    ];
    this.heading.focus({ preventScroll: true });
    this.load();
  }

  handle() {
    return () => {
      this.gone = true;
      for (const off of this.off) off();
      this.stopTimer();
      document.title = this.titleBefore;
    };
  }

  url(suffix = "") {
    return `${this.ctx.config.apiTasks}/${encodeURIComponent(this.id)}${suffix}`;
  }

  async load() {
    const number = ++this.fetching;
    const { status, body } = await this.ctx.api("GET", this.url());
    if (this.gone || number !== this.fetching) return;
    if (status === 200 && body && body.id) {
      if (Array.isArray(body.children)) {
        this.children = body.children;
        this.childrenTotal = Number.isInteger(body.children_total) ? body.children_total : body.children.length;
      }
      const { children, children_total: total, ...task } = body;
      const known = this.ctx.tasks.get(this.id);
      this.task = known && (known.version || 0) > (task.version || 0) ? { ...task, ...known } : task;
      this.render();
      return;
    }
    if (this.task) return;  // keep what is shown; the next push or reconnect brings it up to date
    setText(this.heading, status === 404 ? "Task not found" : "Task");
    document.title = `${status === 404 ? "Task not found" : "Task"} – ${this.titleBefore}`;
    const message = status === 404
      ? `No task with the id “${this.id}” is known to this dashboard. It may have been removed from the history, `
        + "or it belongs to another user."
      : `The task could not be loaded: ${(body && body.error) || (status === 0 ? "the server did not answer" : `HTTP ${status}`)}.`;
    const again = needsServer(el("button", { type: "button" }, "Try again"));
    again.addEventListener("click", () => this.load());
    this.body.replaceChildren(el("p", { class: status === 404 ? "not-found" : "load-error" }, message),
      ...(status === 404 ? [] : [again]));
  }

  changed(ids) {
    if (!this.task) return;
    if (ids.has(this.id)) {
      const pushed = this.ctx.tasks.get(this.id);
      if (pushed && (pushed.version || 0) >= (this.task.version || 0)) {
        const stateBefore = this.task.state;
        this.task = { ...this.task, ...pushed };
        this.render();
        // A new state may come with new children (a group sent) or final ones: read them again.
        if (pushed.state !== stateBefore && (this.children.length || finished(pushed))) this.load();
      }
    }
    if (this.children.some((child) => ids.has(child.id))) this.renderChildren(true);
  }

  title() {
    const task = this.task;
    return visible(this.ctx.titles.get(task.name) || task.name || "Unnamed task");
  }

  // Builds or refreshes each section whose content changed (force: all of them).
  render(force = false) {
    if (!this.task) return;
    const task = this.task;
    setText(this.heading, this.title());
    document.title = `${this.title()} ${shortId(task.id)} – ${this.titleBefore}`;
    if (!this.sections.size) {
      this.body.replaceChildren();
      for (const name of ["summary", "actions", "progress", "arguments", "times", "routing", "result", "error",
        "attempts", "children"]) {
        const node = el("div", { class: `detail-part part-${name}` });
        this.sections.set(name, node);
        this.body.append(node);
      }
    }
    const parts = {
      summary: [task.state, task.owner, task.parent, task.retry_of, task.name, task.worker_status, task.error?.message],
      actions: [task.state, task.name, this.ctx.user.role],
      progress: [task.progress, task.state],
      arguments: [task.args, task.kwargs],
      times: [task.created, task.received, task.started, task.finished, task.state],
      routing: [task.queue, task.exchange, task.routing_key, task.worker, task.worker_status],
      result: [task.result, task.result_truncated, task.state],
      error: [task.error],
      attempts: [task.attempts, task.retries],
    };
    for (const [name, value] of Object.entries(parts)) {
      const key = JSON.stringify(value);
      if (!force && this.shown.get(name) === key) continue;
      this.shown.set(name, key);
      this.replace(name, this[`build_${name}`]());
    }
    this.renderChildren(force);
    this.tick();
  }

  // Replaces a section's content, keeping the focus on the control of the same name if it had it.
  replace(name, nodes) {
    const node = this.sections.get(name);
    const active = document.activeElement;
    const had = active && node.contains(active) ? (active.textContent || active.getAttribute("aria-label")) : null;
    node.replaceChildren(...nodes.filter(Boolean));
    if (had) {
      const again = [...node.querySelectorAll("button, a, [tabindex]")].find((candidate) =>
        (candidate.textContent || candidate.getAttribute("aria-label")) === had);
      (again || this.heading).focus({ preventScroll: true });
    }
  }

  section(name, heading, ...content) {
    const id = `detail-${name}-heading`;
    return el("section", { class: `detail-section sec-${name}`, "aria-labelledby": id },
      el("h3", { id }, heading), ...content);
  }

  build_summary() {
    const task = this.task;
    const facts = el("dl", { class: "facts" },
      ...row("State", el("span", { class: stateClass(task) }, el("span", { class: "badge" }, stateLabel(task)))),
      ...row("Id", el("code", { class: "task-id" }, visible(task.id)), " ", copyButton("Copy id", () => task.id)),
      ...row("Task", el("code", {}, visible(task.name || "unknown"))),
      ...row("Launched by", task.owner ? task.owner : el("span", { class: "muted" }, "not recorded (sent outside the dashboard)")),
    );
    if (task.parent) facts.append(...row("Parent", el("a", { href: taskUrl(task.parent) }, this.label(task.parent))));
    if (task.retry_of) facts.append(...row("Retry of", el("a", { href: taskUrl(task.retry_of) }, this.label(task.retry_of))));
    return [facts];
  }

  label(id) {
    const known = this.ctx.tasks.get(id);
    const name = known ? this.ctx.titles.get(known.name) || known.name : null;
    return name ? `${visible(name)} (${shortId(id)})` : shortId(id);
  }

  build_actions() {
    const task = this.task;
    if (this.ctx.user.role === "viewer") return [];
    const buttons = [];
    const act = (label, fn) => {
      const button = needsServer(el("button", { type: "button" }, label));
      button.addEventListener("click", async () => {
        const actions = await import("./actions.js");
        if (typeof actions[fn] !== "function") return;
        const done = await actions[fn](task, fn === "cancelTask" ? button : this.ctx, this.ctx);
        // A retry launched from this page is the user's own: its start and end are announced.
        if (fn === "retryTask" && done && done.ok && done.task) followLaunch(this.ctx, done.task, this.title());
      });
      buttons.push(button);
    };
    if (!finished(task)) act("Cancel", "cancelTask");
    // Only a catalog task launched from the dashboard (it has an owner) has its arguments kept in
    // full for a retry or a re-run (web/actions.py); others were sent by code the page cannot repeat.
    const repeatable = Boolean(task.owner) && this.ctx.titles.has(task.name);
    if (repeatable && (task.state === "FAILURE" || task.state === "REVOKED")) act("Retry", "retryTask");
    if (repeatable) act("Re-run with changes", "rerunTask");
    return buttons.length ? [el("div", { class: "detail-actions", role: "group", "aria-label": "Actions" }, ...buttons)] : [];
  }

  build_progress() {
    const progress = this.task.progress;
    if (!progress || finished(this.task)) return [];
    const percent = Math.max(0, Math.min(100, Number(progress.percent) || 0));
    const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": String(Math.round(percent)), "aria-label": `Progress of ${this.title()}` },
    el("div", { class: "fill", style: null }));
    bar.firstChild.style.width = `${percent}%`;
    return [this.section("progress", "Progress", bar,
      el("p", {}, `${Math.round(percent)}%${progress.message ? ` · ${visible(progress.message)}` : ""}`))];
  }

  build_arguments() {
    const { args, kwargs } = this.task;
    const none = (text) => el("span", { class: "muted" }, text);
    const list = el("dl", { class: "facts" },
      ...row("Positional", args && args !== "()" && args !== "[]" ? codeBlock(args, "Positional arguments") : none("none")),
      ...row("Keyword", kwargs && kwargs !== "{}" ? codeBlock(kwargs, "Keyword arguments") : none("none")));
    const note = args === undefined && kwargs === undefined
      ? el("p", { class: "muted" }, "The arguments were not recorded for this task.")
      : el("p", { class: "muted help" }, "A bounded preview; sensitive values are masked.");
    return [this.section("arguments", "Arguments", list, note)];
  }

  build_times() {
    const task = this.task;
    this.waitedNode = el("dd", {});
    this.ranNode = el("dd", {});
    const list = el("dl", { class: "facts times" },
      ...row("Sent", timeNode(task.created)),
      ...row("Received", timeNode(task.received)),
      ...row("Started", timeNode(task.started, finished(task) ? "did not start" : "not yet")),
      ...row("Ended", timeNode(task.finished, finished(task) ? "—" : "not yet")),
      el("dt", {}, "Waited"), this.waitedNode, el("dt", {}, "Ran"), this.ranNode);
    return [this.section("times", "Times", list)];
  }

  // The waited and ran times, every second while the task runs and the page is live.
  tick() {
    if (!this.task || !this.waitedNode) return;
    const now = Date.now();
    setText(this.waitedNode, waited(this.task, now) || "—");
    setText(this.ranNode, ran(this.task, now) || "—");
    if (finished(this.task) || (!this.ctx.live.connected && this.ctx.live.lastUpdate)) this.stopTimer();
    else if (!this.timer) this.timer = setInterval(() => this.tick(), SECOND);
  }

  stopTimer() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  build_routing() {
    const task = this.task;
    const value = (text) => (text ? el("code", {}, visible(text)) : el("span", { class: "muted" }, "—"));
    const worker = task.worker ? [el("code", {}, visible(task.worker)), task.worker_status ? ` (${task.worker_status})` : ""]
      : [el("span", { class: "muted" }, "not yet")];
    return [this.section("routing", "Routing", el("dl", { class: "facts" },
      ...row("Queue", value(task.queue)), ...row("Exchange", value(task.exchange)),
      ...row("Routing key", value(task.routing_key)), ...row("Worker", ...worker)))];
  }

  build_result() {
    const task = this.task;
    if (task.state !== "SUCCESS" && (task.result === null || task.result === undefined)) return [];
    const nodes = [codeBlock(pretty(task.result), task.result_truncated ? "Result preview" : "Result value")];
    if (task.result_truncated) {
      const more = needsServer(el("button", { type: "button" }, "Show the whole result"));
      const note = el("p", { class: "muted", role: "status" }, "This is a preview: the result is longer.");
      more.addEventListener("click", () => this.wholeResult(more, note));
      nodes.push(note, more);
    }
    return [this.section("result", "Result", ...nodes)];
  }

  async wholeResult(button, note) {
    button.disabled = true;
    setText(note, "Loading the whole result…");
    const { status, body } = await this.ctx.api("GET", this.url("/result"));
    if (this.gone) return;
    if (status === 200 && body) {
      const block = codeBlock(pretty(body.result), "Whole result", "whole");
      const part = this.sections.get("result").querySelector("section");
      part.querySelector("pre").replaceWith(block);
      setText(note, `The whole result (${Number(body.size || 0).toLocaleString()} bytes).`);
      button.remove();
      block.focus();
      return;
    }
    enable(button);
    setText(note, `The whole result could not be loaded: ${(body && body.error) || `HTTP ${status}`}.`);
  }

  build_error() {
    const error = this.task.error;
    if (!error || (!error.type && !error.message && !error.traceback)) return [];
    const message = visible(error.message || "");
    const short = messagePreview(message);
    const text = el("span", { class: "error-message", id: "detail-error-message" }, short ?? message);
    const nodes = [el("p", { class: "error-line" }, el("strong", {}, visible(error.type || "Error")),
      message ? ": " : "", message ? text : null)];
    if (short !== null) {
      // A preview of a few lines; the whole message on demand, in a box that scrolls by itself.
      const more = `Show the whole message (${message.length.toLocaleString()} characters)`;
      const toggle = el("button", { type: "button", class: "more", "aria-expanded": "false",
        "aria-controls": "detail-error-message" }, more);
      toggle.addEventListener("click", () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(open));
        text.classList.toggle("whole", open);
        if (open) {
          text.setAttribute("tabindex", "0");
          text.setAttribute("role", "region");
          text.setAttribute("aria-label", "Whole error message");
        } else {
          for (const name of ["tabindex", "role", "aria-label"]) text.removeAttribute(name);
        }
        setText(text, open ? message : short);
        setText(toggle, open ? "Show less of the message" : more);
      });
      nodes.push(toggle);
    }
    if (error.traceback) {
      nodes.push(el("div", { class: "traceback-head" }, el("h4", {}, "Traceback"),
        copyButton("Copy traceback", () => error.traceback)));
      nodes.push(codeBlock(error.traceback, "Traceback", "traceback"));
    }
    return [this.section("error", "Error", ...nodes)];
  }

  build_attempts() {
    const attempts = Array.isArray(this.task.attempts) ? this.task.attempts : [];
    if (!attempts.length) return [];
    const rows = attempts.map((attempt) => {
      const error = attempt.error
        ? visible(`${attempt.error.type || "Error"}${attempt.error.message ? `: ${attempt.error.message}` : ""}`) : "";
      return el("tr", {},
        el("th", { scope: "row", "data-label": "Attempt" }, String((attempt.retries || 0) + 1)),
        el("td", { "data-label": "Worker" }, attempt.worker ? el("code", {}, visible(attempt.worker)) : "—"),
        el("td", { "data-label": "Started" }, timeNode(attempt.started)),
        el("td", { "data-label": "Ended" }, timeNode(attempt.finished)),
        el("td", { "data-label": "Ran" }, attempt.started && attempt.finished
          ? duration(Date.parse(attempt.finished) - Date.parse(attempt.started)) : "—"),
        el("td", { class: attempt.error ? "bad" : "", "data-label": "Error" },
          error || (attempt.finished ? "no error" : "—")));
    });
    const table = el("table", { class: "attempts", "aria-labelledby": "detail-attempts-heading" },
      el("thead", {}, el("tr", {}, ...["Attempt", "Worker", "Started", "Ended", "Ran", "Error"]
        .map((head) => el("th", { scope: "col" }, head)))),
      el("tbody", {}, ...rows));
    return [this.section("attempts", `Attempts (${attempts.length})`, el("div", { class: "scroll", tabindex: "0",
      role: "region", "aria-label": "Attempts table" }, table))];
  }

  renderChildren(force) {
    const node = this.sections.get("children");
    if (!node) return;
    const children = this.children.map((child) => {
      const live = this.ctx.tasks.get(child.id);
      return live ? { ...child, state: live.state, retries: live.retries, worker_status: live.worker_status } : child;
    });
    const key = JSON.stringify([children, this.childrenTotal]);
    if (!force && this.shown.get("children") === key) return;
    this.shown.set("children", key);
    if (!children.length) {
      node.replaceChildren();
      return;
    }
    const items = children.map((child) => el("li", { class: stateClass(child) },
      el("a", { href: taskUrl(child.id) }, `${visible(this.ctx.titles.get(child.name) || child.name || "task")} (${shortId(child.id)})`),
      " ", el("span", { class: "badge" }, stateLabel(child))));
    const counts = new Map();
    for (const child of children) counts.set(stateLabel(child), (counts.get(stateLabel(child)) || 0) + 1);
    const total = this.childrenTotal > children.length
      ? `Showing the first ${children.length} of ${this.childrenTotal} children.` : "";
    const summary = [...counts].map(([label, n]) => `${n} ${label}`).join(", ");
    this.replace("children", [this.section("children", `Children (${Math.max(this.childrenTotal, children.length)})`,
      el("p", { class: "muted" }, [summary, total].filter(Boolean).join(". ")),
      el("ul", { class: "children" }, ...items))]);
  }
}

export function mount(root, ctx) {
  return new Detail(root, ctx).handle();
}
