// Acting on tasks: cancel (confirmed), retry, re-run with edited arguments, and the list's bulk bar
// ("Cancel all matching" / "Retry all matching": a preview with the exact count, a confirmation
// that live updates do not change, then the result).
//
// Confirmations are native <dialog>s opened with showModal(): the browser keeps the focus inside,
// Escape dismisses, and the focus goes back to where it was. Every answer the server gives in a
// sentence is shown next to what was clicked and announced (ctx.announce).
import { el, setText, visible } from "./dom.js";
import { needsServer } from "./live.js";
import { LABELS } from "./state.js";

const inFlight = new Set();   // "action:task id" of requests not answered yet: one per click

function shortId(id) {
  return String(id).slice(0, 8);
}

function titleOf(task, ctx) {
  return visible((ctx.titles && ctx.titles.get(task.name)) || task.name || "task");
}

// The server's reasons are sentences ("The task has already ended: it succeeded"): shown after a
// sentence of the page's own, with a capital first letter and a full stop.
function sentence(text) {
  const said = String(text).trim();
  if (!said) return "";
  const first = said[0].toUpperCase() + said.slice(1);
  return /[.!?…]$/.test(first) ? first : `${first}.`;
}

function lowerFirst(text) {
  const said = String(text);
  return said ? said[0].toLowerCase() + said.slice(1) : said;
}

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

function tasksUrl(ctx, id, suffix) {
  return `${ctx.config.apiTasks}/${encodeURIComponent(id)}/${suffix}`;
}

// A random key per action (crypto.randomUUID needs a secure context; getRandomValues does not).
function idempotencyKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- the confirmation dialog ------------------------------------------------------------------

// Asks a question in a modal dialog -> Promise<boolean> (true: confirmed). `lines`: sentences under
// the heading. The safe choice (`keepLabel`) has the focus first; Escape is the same as it.
// `returnFocus`: where the focus goes afterwards (default: where it was).
export function confirmDialog({ heading, lines = [], confirmLabel, keepLabel = "Keep it", danger = true,
  returnFocus = null }) {
  const previous = returnFocus || document.activeElement;
  const headingId = `confirm-${Math.random().toString(36).slice(2)}`;
  const keep = el("button", { type: "submit", value: "keep", class: "keep", autofocus: true }, keepLabel);
  const confirm = needsServer(el("button", { type: "submit", value: "confirm",
    class: danger ? "confirm danger" : "confirm" }, confirmLabel));
  const dialog = el("dialog", { class: "confirm-dialog", "aria-labelledby": headingId },
    el("form", { method: "dialog" },
      el("h2", { id: headingId }, heading),
      ...lines.filter(Boolean).map((line) => el("p", {}, line)),
      el("div", { class: "dialog-buttons" }, keep, confirm)));
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const confirmed = dialog.returnValue === "confirm";
      dialog.remove();
      focusNear(previous);
      resolve(confirmed);
    }, { once: true });
    dialog.showModal();
    keep.focus();
  });
}

// Whether `node` can take the focus now (connected, shown, not disabled).
function focusable(node) {
  return Boolean(node && node.isConnected && !node.disabled && node.getClientRects().length);
}

// After an action from `button`: the button if it is still there, else its row's first link (the
// task's title: the list removes Cancel once the task ended), else the view's heading.
function focusNear(button) {
  if (focusable(button)) return button.focus();
  const row = button && button.closest("tr");
  const link = row && row.querySelector("a[href]");
  if (focusable(link)) return link.focus();
  const heading = button && button.closest("section, main")?.querySelector("h1[tabindex], h2[tabindex]");
  if (heading) heading.focus();
}

// A sentence shown right after `anchor` (a button): the reason an action failed. The anchor is
// described by it, so a screen reader reads it with the button too.
function showError(anchor, text) {
  if (!anchor || !anchor.isConnected) return null;
  const id = anchor.dataset.errorId || `action-error-${Math.random().toString(36).slice(2)}`;
  anchor.dataset.errorId = id;
  let node = document.getElementById(id);
  if (!node) {
    node = el("span", { id, class: "action-error" });
    anchor.insertAdjacentElement("afterend", node);
  }
  setText(node, text);
  anchor.setAttribute("aria-describedby", id);
  return node;
}

function clearError(anchor) {
  const node = anchor && anchor.dataset.errorId && document.getElementById(anchor.dataset.errorId);
  if (node) node.remove();
  if (anchor) anchor.removeAttribute("aria-describedby");
}

// ---- one task -----------------------------------------------------------------------------------

// Cancels `task` from `button` (its row's or the detail view's), after a confirmation naming it.
// While the request is in flight the button stays focusable but does nothing (aria-disabled); a
// refusal shows the server's sentence next to the button and is announced. The focus stays on the
// button; the task list moves it to the row's title when the button goes (the task ended).
export async function cancelTask(task, button, ctx) {
  const key = `cancel:${task.id}`;
  if (inFlight.has(key)) return { ok: false };
  const title = titleOf(task, ctx);
  const short = shortId(task.id);
  const running = ["STARTED", "PROGRESS", "RETRY"].includes(task.state);
  const confirmed = await confirmDialog({
    heading: `Cancel ${title} ${short}?`,
    lines: [running ? "It stops where it is and shows as cancelled." : "It will not run; it shows as cancelled.",
      "A cancelled task can be retried later with the same arguments."],
    confirmLabel: "Cancel task",
    keepLabel: running ? "Keep it running" : "Keep it",
    returnFocus: button,
  });
  if (!confirmed) return { ok: false };
  inFlight.add(key);
  button.setAttribute("aria-disabled", "true");
  clearError(button);
  try {
    const { status, body } = await ctx.api("POST", tasksUrl(ctx, task.id, "cancel"));
    if (status === 202) {
      ctx.announce(`Cancelling ${title} ${short}.`);
      return { ok: true };
    }
    const reason = (body && body.error) || `the server answered ${status || "nothing"}`;
    showError(button, `Not cancelled. ${sentence(reason)}`);
    ctx.announce(`${title} ${short} was not cancelled. ${sentence(reason)}`);
    return { ok: false, error: reason };
  } finally {
    inFlight.delete(key);
    button.removeAttribute("aria-disabled");
    if (!button.contains(document.activeElement) && document.activeElement === document.body) focusNear(button);
  }
}

// Launches a failed or cancelled `task` again with the same arguments, and shows the new task
// (its detail says which task it retries). -> {ok, task?, error?}; a refusal is shown next to the
// focused button and announced.
export async function retryTask(task, ctx) {
  const key = `retry:${task.id}`;
  if (inFlight.has(key)) return { ok: false };
  const anchor = document.activeElement instanceof HTMLButtonElement ? document.activeElement : null;
  const title = titleOf(task, ctx);
  inFlight.add(key);
  if (anchor) anchor.setAttribute("aria-disabled", "true");
  clearError(anchor);
  try {
    const { status, body } = await ctx.api("POST", tasksUrl(ctx, task.id, "retry"), undefined,
      { "Idempotency-Key": idempotencyKey() });
    if (status === 202 && body && body.id) {
      ctx.tasks.upsert(body);
      ctx.announce(`Retried ${title} ${shortId(task.id)}: the new task is ${shortId(body.id)}.`);
      ctx.navigate(`/tasks/${encodeURIComponent(body.id)}`);
      return { ok: true, task: body };
    }
    const reason = (body && body.error) || `the server answered ${status || "nothing"}`;
    showError(anchor, `Not retried. ${sentence(reason)}`);
    ctx.announce(`${title} was not retried. ${sentence(reason)}`);
    return { ok: false, error: reason };
  } finally {
    inFlight.delete(key);
    if (anchor) anchor.removeAttribute("aria-disabled");
  }
}

// Opens the launch form of `task`'s catalog entry filled with its arguments, to change some and
// launch. Values the server keeps hidden (sensitive names) are left empty to be typed again.
export async function rerunTask(task, ctx) {
  const anchor = document.activeElement instanceof HTMLButtonElement ? document.activeElement : null;
  clearError(anchor);
  const { status, body } = await ctx.api("GET", tasksUrl(ctx, task.id, "params"));
  if (status !== 200 || !body || !body.task) {
    const reason = (body && body.error) || `the server answered ${status || "nothing"}`;
    showError(anchor, `Cannot re-run. ${sentence(reason)}`);
    ctx.announce(`Cannot re-run ${titleOf(task, ctx)}. ${sentence(reason)}`);
    return { ok: false, error: reason };
  }
  ctx.navigate("/");
  const forms = await import("./forms.js");
  const filled = await forms.prefill(body.task, body.params || {}, body.masked || []);
  const masked = (body.masked || []).length;
  ctx.announce(`The launch form of ${titleOf(task, ctx)} has the arguments of ${shortId(task.id)}`
    + `${masked ? `; ${plural(masked, "hidden value", "hidden values")} to type again` : ""}.`);
  return { ok: Boolean(filled) };
}

// ---- everything matching a filter ---------------------------------------------------------------

const PAGING = new Set(["page", "size", "limit", "offset", "sort"]);
const FILTER_WORDS = { state: "state", name: "task name", owner: "owner", queue: "queue", worker: "worker",
  since: "sent since", until: "sent until", q: "search" };

// The filter object of a URLSearchParams, query string or object, without paging.
function filterOf(value) {
  const source = typeof value === "function" ? value() : value;
  const entries = source instanceof URLSearchParams ? [...source.entries()]
    : typeof source === "string" ? [...new URLSearchParams(source).entries()] : Object.entries(source || {});
  const filter = {};
  for (const [key, item] of entries) if (!PAGING.has(key) && item !== "" && item !== null) filter[key] = String(item);
  return filter;
}

const UNFINISHED = ["PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"];

// A state filter in the table's words, with Celery's names (the filter's value) beside them:
// "failed (FAILURE)", "unfinished (PENDING,RECEIVED,STARTED,PROGRESS,RETRY)".
function describeStates(value) {
  const names = String(value).split(",").map((name) => name.trim()).filter(Boolean);
  const words = names.length === UNFINISHED.length && UNFINISHED.every((name) => names.includes(name))
    ? "unfinished" : names.map((name) => LABELS[name] || name).join(" or ");
  return `${words} (${names.join(",")})`;
}

// "state failed (FAILURE), task name long" or "every task you may see".
export function describeFilter(filter) {
  const parts = Object.entries(filter || {}).map(([key, value]) => `${FILTER_WORDS[key] || key} `
    + `${key === "state" ? describeStates(value) : value}`);
  return parts.length ? parts.join(", ") : "every task you may see";
}

// "queued, received, started, running or retrying": the table's words for `states`.
function inWords(states) {
  const words = states.map((name) => LABELS[name] || name);
  return words.length > 1 ? `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}` : words.join("");
}

const VERBS = {
  cancel: { button: "Cancel all matching…", doing: "Cancel", done: "Cancelled", none:
    `Nothing to cancel: no ${inWords(UNFINISHED)} task matches these filters.`, keep: "Keep them",
  applies: inWords(UNFINISHED) },
  retry: { button: "Retry all matching…", doing: "Retry", done: "Retried", none:
    `Nothing to retry: no ${inWords(["FAILURE", "REVOKED"])} task launched from the dashboard matches these filters.`,
  keep: "Do not retry", applies: inWords(["FAILURE", "REVOKED"]) },
};

// The list's bulk bar in `root`: one button per action; `currentFilter` (a function, or the view's
// query) names what "matching" means when a button is pressed. -> {update(filter), unmount()}.
export function mountBulk(root, ctx, currentFilter) {
  let filter = currentFilter;
  if (ctx.user.role === "viewer") {
    root.replaceChildren();
    return { update(next) { filter = next; }, unmount() {} };
  }
  const status = el("p", { class: "bulk-status" });
  const buttons = Object.entries(VERBS).map(([action, words]) => {
    const button = needsServer(el("button", { type: "button", class: `bulk-${action}` }, words.button));
    button.addEventListener("click", () => run(action, button));
    return button;
  });
  const bar = el("div", { class: "bulk-bar", role: "group", "aria-label": "Every task matching the filters" },
    ...buttons, status);
  root.replaceChildren(bar);
  let busy = false;

  async function run(action, button) {
    if (busy) return;
    busy = true;
    button.setAttribute("aria-disabled", "true");
    status.className = "bulk-status";
    try {
      const words = VERBS[action];
      const chosen = filterOf(filter);
      const preview = await ctx.api("POST", ctx.config.apiBulkPreview, { action, filter: chosen });
      if (preview.status !== 200) return say(`${words.doing} not possible. ${sentence(String(preview.body.error || preview.status))}`, true);
      const { count, total, capped, cap, truncated, token } = preview.body;
      if (!count) return say(words.none);
      const more = truncated ? `${total} or more` : String(total);
      const confirmed = await confirmDialog({
        heading: `${words.doing} ${plural(count, "task", "tasks")}?`,
        lines: [
          `The ${words.applies} tasks matching ${describeFilter(chosen)}.`,
          capped ? `Only the newest ${count} of the ${more} matching tasks: at most ${cap} at once.` : null,
          `Exactly these ${plural(count, "task", "tasks")}: tasks that start or end from now on do not change it.`,
        ],
        confirmLabel: `${words.doing} ${plural(count, "task", "tasks")}`,
        keepLabel: words.keep,
        danger: action === "cancel",
        returnFocus: button,
      });
      if (!confirmed) return say("");
      const done = await ctx.api("POST", ctx.config.apiBulk, { action, filter: chosen, token });
      if (done.status !== 200) return say(`${words.doing} failed. ${sentence(String(done.body.error || done.status))}`, true);
      const { skipped, reasons } = done.body;
      const why = (reasons || []).map((r) => `${lowerFirst(r.reason)} (${r.count})`).join("; ");
      return say(`${words.done} ${done.body.done} of ${plural(done.body.count, "task", "tasks")}`
        + `${skipped ? `; ${skipped} skipped: ${why}` : ""}.`, skipped > 0);
    } finally {
      busy = false;
      button.removeAttribute("aria-disabled");
    }
  }

  function say(text, problem = false) {
    status.className = problem ? "bulk-status problem" : "bulk-status";
    setText(status, text);
    if (text) ctx.announce(text);
  }

  return {
    update(next) { filter = next; setText(status, ""); },
    unmount() { bar.remove(); },
  };
}
