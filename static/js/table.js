// The task list (/): a bounded window of the server's paged list plus every unfinished task,
// kept live. A push touches only its own row; rendering happens at most once per animation frame.
import { clock, el, setText, visible } from "./dom.js";
import { finished, stateClass, stateLabel } from "./state.js";
import { mountFilters, readView, viewQuery } from "./filters.js";
import { needsServer } from "./live.js";

const SECOND = 1000;

// "0.4 s", "12 s", "3 min 05 s", "2 h 04 min"
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "";
  const s = ms / SECOND;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

const time = (iso) => (iso ? Date.parse(iso) : NaN);

// Waited = started − created (or now − created while it waits); ran = finished (or now) − started.
export function waited(task, now) {
  const created = time(task.created);
  if (Number.isNaN(created)) return "";
  const started = time(task.started);
  if (!Number.isNaN(started)) return duration(Math.max(0, started - created));
  if (finished(task)) return "";
  return duration(Math.max(0, now - created));
}

export function ran(task, now) {
  const started = time(task.started);
  if (Number.isNaN(started)) return "";
  const end = task.finished ? time(task.finished) : (finished(task) ? NaN : now);
  return Number.isNaN(end) ? "" : duration(Math.max(0, end - started));
}

// Matches a task against the view's filters the way the server does (web/filters.py), so that a
// pushed task joins the view only if the server's list would hold it.
export function matches(task, view) {
  if (view.state.length && !view.state.includes(task.state)) return false;
  if (view.name && !(task.name || "").toLowerCase().includes(view.name.toLowerCase())) return false;
  if (view.owner && task.owner !== view.owner) return false;
  if (view.queue && task.queue !== view.queue) return false;
  if (view.worker && !(task.worker || "").toLowerCase().includes(view.worker.toLowerCase())) return false;
  const created = time(task.created);
  if (view.sinceMs !== null && !(created >= view.sinceMs)) return false;
  if (view.untilMs !== null && !(created <= view.untilMs)) return false;
  if (view.q) {
    const q = view.q.toLowerCase();
    const inText = [task.args, task.kwargs].some((text) => typeof text === "string" && text.toLowerCase().includes(q));
    if (!task.id.toLowerCase().startsWith(q) && !inText) return false;
  }
  return true;
}

export function mount(root, ctx) {
  return new TaskList(root, ctx).handle();
}

// A window grown past its page is fetched again at most this often (ms), and at most this many new
// tasks are followed between two fetches (beyond it, the page fetches the server's counts again).
// The same goes for a task the page neither shows nor followed since the last fetch (a burst
// beyond its window): its state as last seen moves the counts at once, and the counts are fetched
// again (at most every REFETCH_MS), the list's status saying they are catching up meanwhile.
const REFETCH_MS = 2000;
const COUNTED_LIMIT = 5000;
export const BEHIND_TEXT = "The counts are catching up with the server…";
// While tasks keep joining (a burst), new rows are placed and the counts redrawn at most this often
// (ms); the first after a quiet spell at once. Placing rows moves every row below them, which costs
// the browser a layout and a paint of the whole table: once per 250 ms, not once per frame (a
// 1,500-task burst made 39 long tasks, 4.0 s in all; 12, 2.1 s, with this). Rows already shown
// change in every frame.
const PLACE_MS = 250;

class TaskList {
  constructor(root, ctx) {
    this.ctx = ctx;
    this.config = ctx.config;
    this.admin = ctx.user.role === "admin";
    this.pageSizes = (this.config.pageSizes || "25,50,100,200").split(",").map(Number);
    this.defaultSize = Number(this.config.pageSize) || 50;
    this.unfinishedLimit = Number(this.config.unfinishedLimit) || 200;
    this.stallFactor = Number(this.config.stallFactor) || 4;
    this.stallMinMs = (Number(this.config.stallMinSeconds) || 5) * SECOND;
    this.rows = new Map();          // id -> row record
    this.order = [];                // displayed ids, top to bottom
    this.joining = new Set();       // ids waiting to be placed in the window (PLACE_MS)
    this.placed = -Infinity;        // when rows were last placed (performance.now())
    this.drawn = -Infinity;         // when the counts were last drawn without placing rows
    this.placing = null;            // the pending placement's timer
    this.unfinishedShown = new Set();
    this.visible = new Set();
    this.fresh = 0;                 // tasks that joined the list out of this page's sight
    this.result = { total: null, counts: null, truncated: false };
    this.request = 0;
    this.counted = new Map();       // id -> state it is counted in, for tasks counted since the last fetch
    this.states = new Map();        // id -> state last seen, for the other tasks the store held (at most COUNTED_LIMIT)
    this.answered = -Infinity;      // when the last fetch was answered (performance.now())
    this.behind = false;            // counts moved that the page could not follow: a refetch is due
    this.refreshing = null;         // a pending refetch (the window grew past its page)
    this.newest = "\uffff";        // the newest `created` known at the last fetch (none: nothing is new)
    this.since = "";                // the newest `created` the tab held when this view was first asked for
    this.sinceView = null;          // ... and that view's query
    this.firstLive = true;
    this.view = readView(ctx.route.query, this.defaultSize, this.pageSizes);

    this.filters = mountFilters(ctx, {
      onChange: (query) => ctx.navigate(`/${query ? `?${query}` : ""}`),
      view: this.view,
      pageSizes: this.pageSizes,
    });
    this.newer = el("button", { type: "button", class: "newer", hidden: true });
    this.newer.addEventListener("click", () => {
      ctx.navigate(`/?${viewQuery({ ...this.view, page: 1, sort: "newest" }, this.defaultSize)}`.replace(/\?$/, ""));
    });
    this.status = el("p", { class: "list-status", id: "list-status" });
    const heads = [["Task"], ["State"], ["Progress"], ["Result"], ["Waited", "col-time"], ["Ran", "col-time"]];
    if (this.admin) heads.push(["Owner", "col-owner"]);
    const headRow = el("tr", {}, ...heads.map(([h, cls]) => el("th", { scope: "col", class: cls }, h)),
      el("th", { scope: "col", class: "col-actions" }, el("span", { class: "visually-hidden" }, "Actions")));
    this.body = el("tbody");
    this.table = el("table", { id: "tasks", class: "tasks", "aria-labelledby": "tasks-heading",
      "aria-describedby": "list-status" }, el("thead", {}, headRow), this.body);
    this.empty = el("p", { id: "no-tasks", class: "empty", hidden: true });
    this.pager = this.filters.pager;
    // "Cancel all matching" / "Retry all matching" (static/js/actions.js): "matching" is this view.
    this.bulk = el("div", { class: "bulk" });
    import("./actions.js")
      .then((actions) => actions.mountBulk(this.bulk, ctx, () => viewQuery(this.view, this.defaultSize, true)))
      .catch((error) => console.error(error));
    root.replaceChildren(
      el("h2", { id: "tasks-heading", tabindex: "-1" }, "Tasks"),
      this.filters.node, this.bulk, this.newer, this.status, this.table, this.empty, this.pager.node);

    this.observer = "IntersectionObserver" in window
      ? new IntersectionObserver((entries) => {
        for (const entry of entries) {
          const id = entry.target.dataset.taskId;
          if (!entry.isIntersecting) {
            this.visible.delete(id);
            continue;
          }
          this.visible.add(id);  // in sight again: its clock-driven texts catch up at once
          const record = this.rows.get(id);
          if (record && this.timer) this.renderTimes(record, Date.now());
        }
      }) : null;
    this.off = [
      ctx.tasks.subscribe((changed) => this.changed(changed)),
      ctx.on("live", () => {
        if (!this.firstLive) this.fetch();
        this.firstLive = false;
        this.startTimer();
      }),
      ctx.on("stale", () => this.stopTimer()),
      ctx.on("behind", () => { if (this.fallBehind()) this.renderSummary(); }),
      ctx.on("titles", () => { for (const id of this.order) this.renderRow(this.rows.get(id), true); }),
    ];
    if (ctx.live.connected) this.firstLive = false;
    if (ctx.live.connected || !ctx.live.lastUpdate) this.startTimer();
    this.fetch();
  }

  handle() {
    return {
      unmount: () => {
        for (const off of this.off) off();
        this.stopTimer();
        clearTimeout(this.refreshing);
        clearTimeout(this.placing);
        if (this.observer) this.observer.disconnect();
      },
      update: (route) => {
        this.view = readView(route.query, this.defaultSize, this.pageSizes);
        this.filters.show(this.view);
        this.fetch();
      },
    };
  }

  // ---- the server's page -------------------------------------------------------------------

  async fetch() {
    const number = ++this.request;
    const view = this.view;
    const params = new URLSearchParams(viewQuery(view, this.defaultSize, true));
    params.set("limit", String(view.size));
    params.set("offset", String((view.page - 1) * view.size));
    params.delete("page");
    params.delete("size");
    this.table.setAttribute("aria-busy", "true");
    const moves = this.ctx.tasks.moves;
    // Tasks newer than what the tab held when this view was first asked for are offered, not
    // slipped in: also those pushed while an answer was on its way, and those a refetch finds.
    const query = viewQuery(view, this.defaultSize, true);
    if (this.sinceView !== query) {
      this.sinceView = query;
      this.since = this.newestKnown();
    }
    let { status, body } = await this.ctx.api("GET", `${this.config.apiTasks}?${params}`);
    if (number !== this.request) return;
    if (status === 422 && view.page > 1 && body.fields?.[0]?.field === "offset") {
      // Deeper than the API pages: an empty page past the end, whose total the first page gives.
      params.set("offset", "0");
      params.set("limit", "1");
      ({ status, body } = await this.ctx.api("GET", `${this.config.apiTasks}?${params}`));
      if (number !== this.request) return;
      if (status === 200 && Array.isArray(body.tasks)) body = { ...body, tasks: [] };
    }
    this.table.removeAttribute("aria-busy");
    // A bad filter value: said on its field (filters.js), and no row pretends to match the filters.
    this.invalid = status === 422;
    if (status !== 200 || !Array.isArray(body.tasks)) {
      if (this.invalid) {
        this.result = { total: null, counts: null, truncated: false };
        this.showIds([]);
      }
      setText(this.status, this.filters.refusal(status, body));
      this.status.className = "list-status error";
      return;
    }
    this.filters.refusal(status, body);
    this.status.className = "list-status";
    // A task or a state that came while the answer was on its way may be in it or not, and so may
    // one pushed just after it (the API reads the store before the push reaches this tab): fetched
    // again to be sure (see moved).
    const meanwhile = this.ctx.tasks.moves !== moves;
    this.answered = performance.now();
    this.behind = this.behind && meanwhile;
    if (meanwhile) this.refetchSoon();
    setText(this.status, this.behind ? BEHIND_TEXT : "");
    for (const task of body.tasks) this.ctx.tasks.upsert(task);
    this.result = { total: Number.isInteger(body.total) ? body.total : null, counts: body.counts || null,
      truncated: Boolean(body.truncated), received: body.tasks.length };
    this.counted = new Map();
    this.states = new Map();
    this.newest = "";
    for (const task of this.ctx.tasks.values()) {
      if ((task.created || "") > this.newest) this.newest = task.created;
      if (this.states.size < COUNTED_LIMIT) this.states.set(task.id, task.state);
    }
    const ids = body.tasks.map((task) => task.id);
    if (!this.since) this.since = this.newest;  // the tab held nothing when it asked
    this.fresh = 0;
    const live = this.live();
    const onPage = new Set(ids);
    for (const task of this.ctx.tasks.values()) {
      if (onPage.has(task.id) || !matches(task, view)) continue;
      if (live && !finished(task)) ids.push(task.id);
      else if (!live && (task.created || "") > this.since) this.fresh += 1;
    }
    this.showIds(ids);
  }

  // The newest `created` among the tasks this tab holds ("" if none).
  newestKnown() {
    let newest = "";
    for (const task of this.ctx.tasks.values()) if ((task.created || "") > newest) newest = task.created;
    return newest;
  }

  // True when the view follows new tasks as they come: page 1, newest first.
  live() {
    return this.view.page === 1 && this.view.sort !== "oldest";
  }

  key(id) {
    const task = this.ctx.tasks.get(id) || this.rows.get(id)?.task;
    return task ? task.created || "" : "";
  }

  sortIds(ids) {
    const sign = this.view.sort === "oldest" ? 1 : -1;
    return ids.sort((a, b) => {
      const ka = this.key(a);
      const kb = this.key(b);
      return ka === kb ? 0 : (ka < kb ? -sign : sign);
    });
  }

  // Shows `ids` sorted, reusing rows: the first page-size of them, and past it the unfinished ones.
  showIds(ids) {
    const all = new Set(ids);
    if (this.live()) for (const id of this.joining) if (matches(this.ctx.tasks.get(id) || { id }, this.view)) all.add(id);
    this.joining.clear();
    clearTimeout(this.placing);
    this.placing = null;
    this.placed = performance.now();
    const sorted = this.sortIds([...all]);
    const keep = [];
    let extra = 0;
    for (const [index, id] of sorted.entries()) {
      const task = this.ctx.tasks.get(id) || this.rows.get(id)?.task;
      if (!task) continue;
      // Past the page size only unfinished tasks stay (the page plus every unfinished task, the
      // newest LIST_UNFINISHED_LIMIT of them).
      if (index >= this.view.size && (finished(task) || ++extra > this.unfinishedLimit)) continue;
      keep.push(id);
    }
    const wanted = new Set(keep);
    for (const [id, record] of this.rows) {
      if (!wanted.has(id)) {
        record.tr.remove();
        if (this.observer) this.observer.unobserve(record.tr);
        this.rows.delete(id);
        this.unfinishedShown.delete(id);
        this.visible.delete(id);
      }
    }
    let previous = null;
    for (const id of keep) {
      let record = this.rows.get(id);
      if (!record) {
        record = this.buildRow(this.ctx.tasks.get(id));
        this.rows.set(id, record);
        if (this.observer) this.observer.observe(record.tr);
      }
      this.renderRow(record);
      const expected = previous ? previous.nextSibling : this.body.firstChild;
      if (expected !== record.tr) this.body.insertBefore(record.tr, expected);
      previous = record.tr;
    }
    this.order = keep;
    this.renderSummary();
  }

  // ---- live changes ------------------------------------------------------------------------

  changed(ids) {
    if (this.invalid) return;
    let joined = null;
    let summary = false;
    for (const id of ids) {
      const record = this.rows.get(id);
      const task = this.ctx.tasks.get(id);
      if (!task) continue;
      if (record) {
        const before = record.task.state;
        this.renderRow(record);
        if (before !== task.state) summary = this.moved(before, task.state) || summary;
        if (this.counted.has(id)) this.counted.set(id, task.state);
        if (this.states.has(id)) this.states.set(id, task.state);
        continue;
      }
      if (this.counted.has(id)) {
        // Counted when it arrived but shown in no row (it fell off the window): its count moves too.
        const before = this.counted.get(id);
        if (before !== task.state) {
          this.counted.set(id, task.state);
          summary = this.moved(before, task.state) || summary;
        }
        continue;
      }
      const isNew = (task.created || "") > this.newest;
      if (!isNew && this.states.get(id) !== task.state) {
        // Neither shown nor followed (a task beyond the window, or one the page had not seen): its
        // move is counted from the state last seen, if any, and the server's counts are fetched
        // again, since what the page saw need not be what the server counted.
        const before = this.states.get(id);
        if (this.states.size < COUNTED_LIMIT || this.states.has(id)) this.states.set(id, task.state);
        const was = before !== undefined && matches({ ...task, state: before }, this.view);
        const is = matches(task, this.view);
        if (was && is) summary = this.moved(before, task.state) || summary;
        if (was || is) summary = this.fallBehind() || summary;
      }
      if (!matches(task, this.view)) continue;
      if (isNew) {
        if (this.counted.size >= COUNTED_LIMIT) this.refetchSoon();  // past what is followed: ask the server
        else this.counted.set(id, task.state);
        this.moved(null, task.state);
        summary = true;
      }
      if (this.live()) {
        // Page 1, newest first: a new task, or any unfinished one, joins; an older finished task
        // belongs to a later page.
        const full = this.order.length >= this.view.size;
        const last = full ? this.key(this.order[this.view.size - 1]) : "";
        if (!finished(task) || !full || (task.created || "") >= last) (joined ||= []).push(id);
      } else if (isNew) {
        this.fresh += 1;
      }
    }
    if (joined) for (const id of joined) this.joining.add(id);
    if (joined || summary) this.placeSoon();
    // Unfinished tasks join the window beyond its page; once some of them have ended, the window
    // is no longer the server's page: fetch it again (at most every REFETCH_MS), so a tab stays a
    // view of the server's list instead of an accumulation.
    if (this.order.length > this.view.size
        && this.order.slice(this.view.size).some((id) => finished(this.ctx.tasks.get(id) || {}))) {
      this.refetchSoon();
    }
  }

  // Places the joining rows, or only draws the counts: at once if that was not done in the last
  // PLACE_MS, else in the first frame PLACE_MS after it.
  placeSoon() {
    const last = this.joining.size ? this.placed : Math.max(this.placed, this.drawn);
    const wait = last + PLACE_MS - performance.now();
    if (wait <= 0) {
      clearTimeout(this.placing);
      this.place();
    } else if (!this.placing) {
      this.placing = setTimeout(() => requestAnimationFrame(() => this.place()), wait);
    }
  }

  place() {
    this.placing = null;
    if (this.joining.size) {
      this.showIds(this.order);
    } else {
      this.drawn = performance.now();
      this.renderSummary();
    }
  }

  // Counts moved that the page could not follow: fetched again soon, and the status says so. -> true
  fallBehind() {
    this.refetchSoon();
    if (this.behind || this.result.counts === null) return false;
    this.behind = true;
    setText(this.status, BEHIND_TEXT);
    return true;
  }

  refetchSoon() {
    if (this.refreshing) return;
    this.refreshing = setTimeout(() => {
      this.refreshing = null;
      this.fetch();
    }, REFETCH_MS);
  }

  // A move the page saw: counted, and fetched again if it came within REFETCH_MS of the last answer
  // (it may have been counted there already); -> true if shown.
  moved(from, to) {
    if (performance.now() - this.answered < REFETCH_MS) this.refetchSoon();
    return this.countMove(from, to);
  }

  // Keeps the server's counts and total in step with what the page sees happen; -> true if shown.
  countMove(from, to) {
    const counts = this.result.counts;
    if (from === null && this.result.total !== null) this.result.total += 1;
    if (!counts) return from === null;
    if (from !== null && counts[from]) counts[from] -= 1;
    counts[to] = (counts[to] || 0) + 1;
    return true;
  }

  // ---- rows --------------------------------------------------------------------------------

  buildRow(task) {
    const title = el("a", { class: "title", href: `/tasks/${encodeURIComponent(task.id)}` });
    const short = el("code", { class: "id" });
    const nameCell = el("td", { class: "name", "data-label": "Task" }, title, short);
    if (task.parent) nameCell.append(el("span", { class: "parent" }, `child of ${task.parent.slice(0, 8)}`));
    const badge = el("span", { class: "badge" });
    const stalled = el("span", { class: "stalled", hidden: true });
    const stateCell = el("td", { class: "state", "data-label": "State" }, badge);
    const fill = el("div", { class: "fill" });
    const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
    const percent = el("span", { class: "percent" });
    const eta = el("span", { class: "eta" });
    const message = el("span", { class: "message" });
    // What an update changes (the percent, the message, the clocks) sits in boxes of a fixed height
    // with `contain: strict` (static/css/table.css): new text lays out and repaints that box, not the
    // table around it.
    const progressCell = el("td", { class: "progress", "data-label": "Progress" }, bar,
      el("div", { class: "progress-text" }, percent, eta, stalled), message);
    const details = el("td", { class: "details", "data-label": "Result" });
    const waitedCell = el("span", { class: "clock" });
    const ranCell = el("span", { class: "clock" });
    const tr = el("tr", { "data-task-id": task.id }, nameCell, stateCell, progressCell, details,
      el("td", { class: "time waited", "data-label": "Waited" }, waitedCell),
      el("td", { class: "time ran", "data-label": "Ran" }, ranCell));
    const record = { id: task.id, task, tr, title, short, badge, stalled, bar, fill, percent, eta, message,
      details, waitedCell, ranCell, version: -1, detailsKey: null, moves: 0, gap: null, movedAt: null, lastPercent: null };
    if (this.admin) {
      record.owner = el("td", { class: "owner", "data-label": "Owner" });
      tr.append(record.owner);
    }
    const cancel = needsServer(el("button", { type: "button", class: "cancel" }, "Cancel"));
    cancel.addEventListener("click", () => this.cancel(record, cancel));
    record.cancel = cancel;
    tr.append(el("td", { class: "actions" }, cancel));
    return record;
  }

  async cancel(record, button) {
    try {
      const actions = await import("./actions.js");
      await actions.cancelTask(record.task, button, this.ctx);
    } catch (error) {
      console.error(error);
      button.disabled = false;
    }
  }

  titleOf(task) {
    return visible(this.ctx.titles.get(task.name) || task.name || "unknown task");
  }

  renderRow(record, force = false) {
    const task = this.ctx.tasks.get(record.id) || record.task;
    if (!force && task.version === record.version && record.version !== -1) return;
    const now = Date.now();
    const title = this.titleOf(task);
    const short = visible(task.id.slice(0, 8));
    record.task = task;
    record.version = task.version;
    const done = finished(task);
    const rowClass = `${stateClass(task)}${task.worker_status ? " not-responding" : ""}`;
    if (record.tr.className !== rowClass) record.tr.className = rowClass;
    setText(record.title, title);
    setText(record.short, short);
    setText(record.badge, stateLabel(task));
    const reported = task.progress && Number.isFinite(task.progress.percent) ? task.progress.percent : null;
    const percent = reported ?? (task.state === "SUCCESS" ? 100 : 0);
    if (record.lastPercent !== percent) {
      if (record.lastPercent !== null && percent > record.lastPercent) {
        const gap = record.movedAt ? now - record.movedAt : null;
        if (gap !== null) record.gap = record.gap === null ? gap : 0.7 * record.gap + 0.3 * gap;
        record.moves += 1;
      }
      record.movedAt = now;
      record.lastPercent = percent;
      record.bar.setAttribute("aria-valuenow", String(percent));
      // A transform, not a width: the compositor moves it, with no layout of the table.
      record.fill.style.transform = `scaleX(${Math.max(0, Math.min(100, percent)) / 100})`;
      setText(record.percent, `${Math.round(percent)}%`);
    }
    const label = `Progress of ${title} ${short}`;
    if (record.bar.getAttribute("aria-label") !== label) record.bar.setAttribute("aria-label", label);
    const said = task.progress ? visible(task.progress.message || "") : "";
    if (record.message.textContent !== said) {
      record.message.textContent = said;
      record.message.title = said;  // one line in the list, cut with an ellipsis: the whole of it on hover
    }
    this.renderDetails(record, task, title, short);
    if (record.owner) setText(record.owner, task.owner || "—");
    const hide = this.ctx.user.role === "viewer" || done;
    if (record.cancel.hidden !== hide) {
      // A keyboard Cancel must not drop the focus to the page's top when its button goes.
      if (hide && document.activeElement === record.cancel) record.title.focus();
      record.cancel.hidden = hide;
    }
    const cancelLabel = `Cancel ${title} ${short}`;
    if (record.cancel.getAttribute("aria-label") !== cancelLabel) record.cancel.setAttribute("aria-label", cancelLabel);
    if (done) this.unfinishedShown.delete(record.id); else this.unfinishedShown.add(record.id);
    this.renderTimes(record, now);
  }

  renderDetails(record, task, title, short) {
    let key;
    if (task.error && task.state !== "SUCCESS") key = `e${task.error.type}\u0000${task.error.message}\u0000${task.error.traceback || ""}`;
    else if (task.state === "SUCCESS") key = `r${JSON.stringify(task.result)}${task.result_truncated ? "+" : ""}`;
    else key = "";
    if (key === record.detailsKey) return;
    record.detailsKey = key;
    const cell = record.details;
    // An ending is often told twice (the worker's event, then the result backend's record, whose
    // traceback may read differently): a traceback the user opened stays open when it is replaced.
    const wasOpen = Boolean(cell.querySelector("details.traceback[open]"));
    cell.replaceChildren();
    if (task.error && task.state !== "SUCCESS") {
      // Only a failure reads as an error; a cancel or a lost worker is said in a neutral voice.
      const tone = task.state === "FAILURE" || task.state === "RETRY" ? "error" : "outcome-note";
      cell.append(el("span", { class: tone }, visible(`${task.error.type}: ${task.error.message}`)));
      if (task.error.traceback) {
        const box = el("pre", { tabindex: "0", role: "region", "aria-label": `Traceback of ${title} ${short}` },
          visible(task.error.traceback));
        cell.append(el("details", { class: "traceback", open: wasOpen }, el("summary", {}, "Traceback"), box));
      }
    } else if (task.state === "SUCCESS") {
      const text = typeof task.result === "string" && task.result_truncated ? task.result : JSON.stringify(task.result);
      cell.append(el("code", { class: "result" }, visible(text)));
      if (task.result_truncated) {
        cell.append(" ", el("a", { href: `${this.config.apiTasks}/${encodeURIComponent(task.id)}/result`, class: "full-result" },
          "(preview: open the whole result)"));
      }
    }
  }

  // Waited, ran, the ETA and the stalled badge: what changes with the clock alone.
  renderTimes(record, now) {
    const task = record.task;
    setText(record.waitedCell, waited(task, now));
    setText(record.ranCell, ran(task, now) + (task.clock_skew ? " (clocks disagree)" : ""));
    const running = !finished(task) && !Number.isNaN(time(task.started));
    const percent = record.lastPercent || 0;
    let eta = "";
    let stalled = false;
    if (running && percent > 0 && percent < 100) {
      // The task's own rate: percent done since it started, up to its latest report.
      const started = time(task.started);
      const reported = Math.max(time(task.updated) || 0, started);
      const rate = percent / Math.max(1, reported - started);
      const left = (100 - percent) / rate - (now - Math.max(record.movedAt || now, reported));
      if (Number.isFinite(left) && reported > started) eta = left > 0 ? `about ${duration(left)} left` : "finishing";
      // Its usual gap between moves: as seen here, or else from its own history (time to its
      // latest report over the steps reported); stalled when still for several such gaps.
      let gap = record.moves >= 2 ? record.gap : null;
      const steps = task.progress && Number(task.progress.current);
      if (gap === null && steps > 0 && reported > started) gap = (reported - started) / steps;
      const still = now - (record.moves ? record.movedAt : reported);
      if (gap !== null) stalled = still > Math.max(this.stallFactor * gap, this.stallMinMs);
    }
    if (stalled) eta = "";
    setText(record.eta, eta);
    if (record.stalled.hidden === stalled) {
      record.stalled.hidden = !stalled;
      setText(record.stalled, stalled ? "stalled" : "");  // no hidden word in the row's text
    }
  }

  // ---- timers (unfinished rows in sight only; stopped while not live) ----------------------

  startTimer() {
    if (this.timer) return;
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const id of this.unfinishedShown) {
        if (this.observer && !this.visible.has(id)) continue;
        const record = this.rows.get(id);
        if (record) this.renderTimes(record, now);
      }
    }, SECOND);
  }

  stopTimer() {
    clearInterval(this.timer);
    this.timer = null;
  }

  // ---- summary: counts, paging, "new tasks", empty text -----------------------------------

  renderSummary() {
    const { total, counts, truncated } = this.result;
    this.filters.showCounts(counts, this.view);
    this.pager.show(this.view, total, this.order.length, truncated);
    this.newer.hidden = this.fresh === 0;
    setText(this.newer, `${this.fresh} new ${this.fresh === 1 ? "task" : "tasks"} — show`);
    const text = this.emptyText();
    this.empty.hidden = this.order.length > 0 || !text;
    setText(this.empty, text);
  }

  emptyText() {
    if (this.invalid) return "";
    // Past the end with a known total: the pager says so and links to the last page (filters.js).
    if (this.view.page > 1) return this.result.total === null ? "This page is past the end of the list." : "";
    if (!this.filters.isEmpty(this.view)) return "No task matches these filters.";
    const role = this.ctx.user.role;
    if (role === "admin") return "No tasks yet. Launch one above, or call .delay() from any Python shell: every task on this Redis shows here.";
    if (role === "operator") return "No tasks yet. The tasks you launch above show here.";
    return "No tasks to show. As a viewer you can follow the tasks shared with your account here; you cannot launch or cancel tasks.";
  }
}

export { clock };
