// The audit log (/audit, admins): who cancelled or retried what, and every bulk action with its
// filter and counts, newest first, a page at a time.
import { el, setText, visible } from "./dom.js";
import { describeFilter } from "./actions.js";

const PAGE = 50;
const ACTIONS = { cancel: "Cancel", retry: "Retry", "bulk-cancel": "Bulk cancel", "bulk-retry": "Bulk retry" };

function when(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return String(iso || "");
  return date.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hour12: false });
}

function taskLink(id, name, ctx) {
  const title = (name && ctx.titles.get(name)) || name || "task";
  return el("a", { href: `/tasks/${encodeURIComponent(id)}` }, visible(`${title} ${String(id).slice(0, 8)}`));
}

// What an entry acted on: the task (and a retry's new task), or a bulk action's filter.
function what(entry, ctx) {
  const cell = el("td", { "data-label": "What" });
  if (entry.task) {
    cell.append(taskLink(entry.task, entry.name, ctx));
    if (entry.new_task) cell.append(" → new task ", taskLink(entry.new_task, entry.name, ctx));
  } else {
    cell.append(`Tasks matching ${describeFilter(entry.filter)}`);
  }
  return cell;
}

function counts(entry) {
  if (!entry.action.startsWith("bulk-")) return "1";
  const done = Number(entry.done) || 0;
  const skipped = Number(entry.skipped) || 0;
  return `${done} of ${entry.count}${skipped ? `, ${skipped} skipped` : ""}`;
}

export function mount(root, ctx) {
  const heading = el("h2", { id: "audit-heading", tabindex: "-1" }, "Audit log");
  const status = el("p", { class: "audit-status", id: "audit-status" });
  const body = el("tbody");
  const table = el("table", { class: "audit", "aria-labelledby": "audit-heading", "aria-describedby": "audit-status" },
    el("thead", {}, el("tr", {}, ...["When", "Who", "Action", "What", "Tasks"].map((h) => el("th", { scope: "col" }, h)))),
    body);
  const newer = el("button", { type: "button" }, "Newer entries");
  const older = el("button", { type: "button" }, "Older entries");
  const refresh = el("button", { type: "button" }, "Refresh");
  const pager = el("div", { class: "audit-pager", role: "group", "aria-label": "Pages of the audit log" },
    newer, older, refresh);
  root.replaceChildren(heading, status, table, pager);
  let offset = 0;
  let request = 0;

  async function load(at) {
    const number = ++request;
    table.setAttribute("aria-busy", "true");
    const { status: code, body: answer } = await ctx.api("GET", `${ctx.config.apiAudit}?limit=${PAGE}&offset=${at}`);
    if (number !== request) return;
    table.removeAttribute("aria-busy");
    if (code !== 200 || !Array.isArray(answer.entries)) {
      setText(status, code === 403 ? "The audit log is for admins." : `Could not load the audit log: ${answer.error || code}.`);
      status.className = "audit-status error";
      body.replaceChildren();
      table.hidden = newer.hidden = older.hidden = true;
      return;
    }
    offset = at;
    status.className = "audit-status";
    const total = Number(answer.total) || 0;
    setText(status, total ? `Entries ${at + 1}–${at + answer.entries.length} of ${total}, newest first.`
      : "Nothing has been cancelled or retried yet.");
    body.replaceChildren(...answer.entries.map((entry) => el("tr", {},
      el("td", { "data-label": "When" }, el("time", { datetime: entry.when }, when(entry.when))),
      el("td", { "data-label": "Who" }, entry.who),
      el("td", { "data-label": "Action" }, ACTIONS[entry.action] || entry.action),
      what(entry, ctx),
      el("td", { "data-label": "Tasks" }, counts(entry)))));
    table.hidden = answer.entries.length === 0;
    newer.hidden = at === 0;
    older.hidden = at + answer.entries.length >= total;
    if (pager.contains(document.activeElement) && document.activeElement.hidden) heading.focus();  // its button went
  }

  newer.addEventListener("click", () => load(Math.max(0, offset - PAGE)));
  older.addEventListener("click", () => load(offset + PAGE));
  refresh.addEventListener("click", () => load(offset));
  load(0);
  return () => { request += 1; };
}
