// The task list's filters, counts per state and paging; the URL's query string is the view.
import { el, setText } from "./dom.js";
import { LABELS } from "./state.js";

const TEXT_FIELDS = ["name", "owner", "queue", "worker", "q"];
const UNFINISHED = "PENDING,RECEIVED,STARTED,PROGRESS,RETRY";
const STATE_CHOICES = [
  ["", "Any state"], [UNFINISHED, "unfinished"], ["PENDING", LABELS.PENDING], ["RECEIVED", LABELS.RECEIVED],
  ["STARTED", LABELS.STARTED], ["PROGRESS", LABELS.PROGRESS], ["RETRY", LABELS.RETRY],
  ["SUCCESS", LABELS.SUCCESS], ["FAILURE", LABELS.FAILURE], ["REVOKED", LABELS.REVOKED],
  ["LOST", LABELS.LOST], ["UNKNOWN", LABELS.UNKNOWN], ["REJECTED", LABELS.REJECTED], ["IGNORED", LABELS.IGNORED],
];

// An ISO 8601 time or epoch seconds -> ms since the epoch, or null.
function instant(value) {
  if (!value) return null;
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value) * 1000;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

// The view a query string names: {state: [..], name, owner, queue, worker, since, until, sinceMs,
// untilMs, q, sort: "newest"|"oldest", size, page (1-based)}.
export function readView(query, defaultSize, pageSizes) {
  const get = (key) => (query.get(key) || "").trim();
  const size = Number(get("size"));
  const page = Number(get("page"));
  const view = {
    state: get("state") ? get("state").split(",").map((s) => s.trim()).filter(Boolean) : [],
    since: get("since"), until: get("until"),
    sort: get("sort") === "oldest" ? "oldest" : "newest",
    size: pageSizes.includes(size) ? size : defaultSize,
    page: Number.isInteger(page) && page > 0 ? page : 1,
  };
  for (const key of TEXT_FIELDS) view[key] = get(key);
  view.sinceMs = instant(view.since);
  view.untilMs = instant(view.until);
  return view;
}

// The query string of a view (defaults left out, so "/" is the default view).
export function viewQuery(view, defaultSize, forApi = false) {
  const params = new URLSearchParams();
  if (view.state.length) params.set("state", view.state.join(","));
  for (const key of ["name", "owner", "queue", "worker", "since", "until", "q"]) if (view[key]) params.set(key, view[key]);
  if (view.sort === "oldest" || forApi) params.set("sort", view.sort);
  if (view.size !== defaultSize) params.set("size", String(view.size));
  if (view.page > 1) params.set("page", String(view.page));
  return params.toString();
}

function isEmpty(view) {
  return !view.state.length && !view.since && !view.until && TEXT_FIELDS.every((key) => !view[key]);
}

// "2026-11-30T14:03" in local time, for a datetime-local input.
function localInput(ms) {
  if (ms === null) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function field(id, label, input) {
  return el("div", { class: "filter" }, el("label", { for: id }, label), input);
}

// The API's field names (GET /api/tasks) -> [the input's key here, its label].
const FIELD_INPUTS = {
  state: ["state", "State"], name: ["name", "Task name"], owner: ["owner", "Owner"], queue: ["queue", "Queue"],
  worker: ["worker", "Worker"], since: ["since", "Sent from"], until: ["until", "Sent until"], q: ["q", "Search"],
  sort: ["sort", "Sort"], limit: ["size", "Rows per page"],
};

export function mountFilters(ctx, { onChange, view: initial, pageSizes }) {
  const defaultSize = Number(ctx.config.pageSize) || 50;
  const admin = ctx.user.role === "admin";
  let view = initial;
  const inputs = {};
  const form = el("form", { class: "filters", role: "search", "aria-label": "Filter tasks" });
  inputs.state = el("select", { id: "filter-state", name: "state" });
  for (const [value, label] of STATE_CHOICES) inputs.state.append(el("option", { value }, label));
  form.append(field("filter-state", "State", inputs.state));
  const names = el("datalist", { id: "task-names" });
  inputs.name = el("input", { id: "filter-name", name: "name", type: "text", list: "task-names", autocomplete: "off" });
  form.append(field("filter-name", "Task name", inputs.name), names);
  if (admin) {
    inputs.owner = el("input", { id: "filter-owner", name: "owner", type: "text", autocomplete: "off" });
    form.append(field("filter-owner", "Owner", inputs.owner));
  }
  inputs.queue = el("input", { id: "filter-queue", name: "queue", type: "text", autocomplete: "off" });
  inputs.worker = el("input", { id: "filter-worker", name: "worker", type: "text", autocomplete: "off" });
  inputs.since = el("input", { id: "filter-since", name: "since", type: "datetime-local" });
  inputs.until = el("input", { id: "filter-until", name: "until", type: "datetime-local" });
  inputs.q = el("input", { id: "filter-q", name: "q", type: "search", autocomplete: "off",
    placeholder: "id prefix or argument text" });
  inputs.sort = el("select", { id: "filter-sort", name: "sort" },
    el("option", { value: "newest" }, "Newest first"), el("option", { value: "oldest" }, "Oldest first"));
  inputs.size = el("select", { id: "filter-size", name: "size" },
    ...pageSizes.map((n) => el("option", { value: String(n) }, String(n))));
  form.append(
    field("filter-queue", "Queue", inputs.queue), field("filter-worker", "Worker", inputs.worker),
    field("filter-since", "Sent from", inputs.since), field("filter-until", "Sent until", inputs.until),
    field("filter-q", "Search", inputs.q), field("filter-sort", "Sort", inputs.sort),
    field("filter-size", "Rows per page", inputs.size));
  const clear = el("button", { type: "button", class: "clear" }, "Clear filters");
  form.append(el("div", { class: "filter-buttons" }, el("button", { type: "submit" }, "Apply"), clear));
  const box = el("details", { class: "filters-box" }, el("summary", {}, "Filters and search"), form);
  box.open = !window.matchMedia("(max-width: 640px)").matches || !isEmpty(initial);
  const counts = el("div", { class: "counts", role: "group", "aria-label": "Tasks by state" });

  ctx.catalog.then(() => {
    names.replaceChildren(...[...ctx.titles.keys()].map((name) => el("option", { value: name })));
  });

  function read() {
    const next = { ...view, page: 1 };
    next.state = inputs.state.value ? inputs.state.value.split(",") : [];
    for (const key of TEXT_FIELDS) next[key] = inputs[key] ? inputs[key].value.trim() : view[key];
    next.since = inputs.since.value ? new Date(inputs.since.value).toISOString() : "";
    next.until = inputs.until.value ? new Date(inputs.until.value).toISOString() : "";
    next.sort = inputs.sort.value;
    next.size = Number(inputs.size.value);
    return next;
  }

  function apply(next) {
    onChange(viewQuery(next, defaultSize));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply(read());
  });
  form.addEventListener("change", (event) => {
    if (event.target.tagName === "SELECT" || event.target.type === "datetime-local") apply(read());
  });
  clear.addEventListener("click", () => apply({ ...readView(new URLSearchParams(), defaultSize, pageSizes),
    size: view.size, sort: view.sort }));

  // The State select shows the view's states: one of its choices (the same states in any order),
  // else an option added for them, named by their labels ("started, running, lost (worker gone)").
  function showState(states) {
    const same = (value) => {
      const names = value ? value.split(",") : [];
      return names.length === states.length && states.every((s) => names.includes(s));
    };
    for (const o of [...inputs.state.options]) if (o.dataset.added && !same(o.value)) o.remove();
    let option = [...inputs.state.options].find((o) => same(o.value));
    if (!option) {
      option = el("option", { value: states.join(","), "data-added": "true" },
        states.map((s) => LABELS[s] || s).join(", "));
      inputs.state.append(option);
    }
    inputs.state.value = option.value;
  }

  function show(next) {
    view = next;
    showState(view.state);
    for (const key of TEXT_FIELDS) if (inputs[key] && document.activeElement !== inputs[key]) inputs[key].value = view[key];
    inputs.since.value = localInput(view.sinceMs);
    inputs.until.value = localInput(view.untilMs);
    inputs.sort.value = view.sort;
    inputs.size.value = String(view.size);
  }
  show(initial);

  function showCounts(values) {
    if (!values || !Object.keys(values).length) {
      counts.hidden = true;
      return;
    }
    counts.hidden = false;
    const wanted = Object.entries(values).filter(([, n]) => n > 0).sort(([a], [b]) => a.localeCompare(b));
    const buttons = wanted.map(([state, n]) => {
      const pressed = view.state.length === 1 && view.state[0] === state;
      const button = el("button", { type: "button", class: `count state-${state}`, "aria-pressed": String(pressed) },
        `${LABELS[state] || state} ${n}`);
      button.addEventListener("click", () => apply({ ...view, page: 1, state: pressed ? [] : [state] }));
      return button;
    });
    const focused = counts.contains(document.activeElement) ? document.activeElement.textContent : null;
    counts.replaceChildren(...buttons);
    if (focused) buttons.find((b) => b.textContent.split(" ")[0] === focused.split(" ")[0])?.focus();
  }

  // ---- the server's refusal of a filter value, on its field --------------------------------

  const marked = [];

  // The list's answer: a 422 names its fields (`fields[].field`, `.message`), shown on each
  // field (aria-invalid, described by the sentence) -> the sentence for the list's status line;
  // any other answer clears them (-> "" for a 200).
  function refusal(status, body = {}) {
    for (const [input, note] of marked.splice(0)) {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
      note.remove();
    }
    if (status === 200) return "";
    const fields = status === 422 && Array.isArray(body.fields) ? body.fields : [];
    if (!fields.length) {
      const reason = String(body.error || (status === 0 ? "the server did not answer" : `HTTP ${status}`)).replace(/\.$/, "");
      return status === 422 ? `These filters cannot be used: ${reason}.` : `Could not load the task list: ${reason}.`;
    }
    const said = [];
    for (const item of fields) {
      const [key, label] = FIELD_INPUTS[item.field] || [null, String(item.field || "a filter")];
      const value = key === "state" ? view.state.join(",") : key && typeof view[key] === "string" ? view[key] : "";
      const given = value ? ` (not “${value.slice(0, 60)}”)` : "";
      // "State is not a state Celery … uses; did you mean SUCCESS? (not “success”)": the hint ends it.
      const message = String(item.message || "is not valid");
      const sentence = /\?$/.test(message) ? `${label}${value ? ` “${value.slice(0, 60)}”` : ""} ${message}`
        : `${label} ${message}${given}.`;
      said.push(sentence);
      const input = key && inputs[key];
      if (input && !input.hasAttribute("aria-invalid")) {
        const note = el("p", { class: "field-error", id: `${input.id}-error` }, sentence);
        input.after(note);
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", note.id);
        marked.push([input, note]);
      }
    }
    box.open = true;
    return `No tasks are shown: ${said.join(" ")} Correct it, or clear the filters.`;
  }

  // ---- paging ----------------------------------------------------------------------------
  const previous = el("button", { type: "button", class: "previous" }, "Previous page");
  const next = el("button", { type: "button", class: "next" }, "Next page");
  const where = el("span", { class: "where" });
  const cut = el("p", { class: "truncated", role: "note", hidden: true });
  const lastLink = el("a", { href: "/" });
  const pastText = el("span");
  const past = el("p", { class: "past-end", hidden: true }, pastText, " ", lastLink);
  const pagerNode = el("nav", { class: "pager", "aria-label": "Pages of tasks" }, past, previous, where, next, cut);
  previous.addEventListener("click", () => apply({ ...view, page: Math.max(1, view.page - 1) }));
  next.addEventListener("click", () => apply({ ...view, page: view.page + 1 }));
  const pager = {
    node: pagerNode,
    show(current, total, shown, truncated) {
      const first = (current.page - 1) * current.size;
      const pages = total === null ? null : Math.max(1, Math.ceil(total / current.size));
      pagerNode.hidden = current.page === 1 && !shown && !truncated;  // nothing to page through
      previous.disabled = current.page <= 1;
      next.disabled = total === null ? shown < current.size : current.page >= pages;
      const range = shown ? `${first + 1}–${first + Math.min(shown, current.size)}` : "none";
      const of = total === null ? "" : ` of ${truncated ? "at least " : ""}${total}`;
      setText(where, `Page ${current.page}${pages ? ` of ${truncated ? "at least " : ""}${pages}` : ""} · tasks ${range}${of}`);
      // A page past the end (a link, or a list that shrank): said in words, with the way back.
      const beyond = pages !== null && !shown && current.page > pages;
      past.hidden = !beyond;
      if (beyond) {
        setText(pastText, `Page ${current.page} is past the last page, ${pages}.`);
        const query = viewQuery({ ...current, page: pages }, defaultSize);
        lastLink.setAttribute("href", `/${query ? `?${query}` : ""}`);
        setText(lastLink, `Go to page ${pages}`);
      }
      cut.hidden = !truncated;
      setText(cut, "This list was cut short: the search stopped at its limit, so the counts are lower bounds. Narrow the filters to see everything.");
    },
  };

  return {
    node: el("div", { class: "list-controls" }, box, counts),
    pager,
    show,
    showCounts,
    isEmpty,
    refusal,
  };
}
