// Workers and queues (/workers): each worker's status, pool and counts, each queue's depth and
// oldest message, and a banner when a queue has messages no worker consumes. One GET of each on
// mount, then live from the server's `workers` push (every few seconds when something changes).
import { el, setText, visible } from "./dom.js";

const STATUS_CLASS = { online: "ok", "not responding": "warn", offline: "off" };
const TICK_MS = 1000;   // ages ("3 s ago") are counted on the page between pushes

// "42 s", "3 min 5 s", "2 h 10 min"
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function since(iso, now) {
  const when = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(when) ? null : (now - when) / 1000;
}

function cell(label, content, cls) {
  return el("td", { "data-label": label, class: cls }, content);
}

function workerRow(worker, now) {
  const status = worker.status || (worker.online ? "online" : "offline");
  const age = since(worker.last_heartbeat, now);
  const beat = el("time", { datetime: worker.last_heartbeat || "", "data-since": worker.last_heartbeat || "" },
    age === null ? "never" : `${duration(age)} ago`);
  return el("tr", { class: `worker status-${STATUS_CLASS[status] || "off"}` },
    el("th", { scope: "row", class: "host" }, visible(worker.hostname)),
    cell("Status", el("span", { class: "badge" }, status), "status"),
    cell("Pool", worker.pool || "not known yet", "pool"),
    cell("Concurrency", worker.concurrency ?? "—", "num"),
    // A worker not online cannot say what it runs now: its count is the last it gave (less the
    // tasks the dashboard shows ended since), and says so.
    cell("Active", status !== "online" && worker.active ? `${worker.active} (last known)` : worker.active ?? 0,
      "num"),
    cell("Processed", worker.processed ?? 0, "num"),
    cell("Failed", worker.failed ?? 0, "num"),
    cell("Last heartbeat", beat, "time"));
}

function queueRow(queue, now) {
  const age = queue.oldest ? since(queue.oldest, now) : queue.oldest_age;
  const oldest = queue.depth === 0 ? "—"
    : age === null || age === undefined ? "not known"
      : el("time", { datetime: queue.oldest || "", "data-since": queue.oldest || "" }, duration(age));
  const consumers = queue.unconsumed
    ? el("span", { class: "badge warn" }, "none: nothing takes these messages")
    : String(queue.consumers);
  return el("tr", { class: queue.unconsumed ? "queue unconsumed" : "queue" },
    el("th", { scope: "row", class: "host" }, visible(queue.name)),
    cell("Waiting", queue.depth, "num"),
    cell("Oldest message", oldest, "time"),
    cell("Consumers", consumers, "consumers"));
}

// A heading and its table, named by it (the heading is the one name a screen reader hears: no
// caption or region repeats it). The table scrolls in a box of its own on narrow screens,
// reachable by keyboard (tabindex).
function table(id, title, headings, body) {
  return [
    el("h3", { class: "monitor-heading", id }, title),
    el("div", { class: "monitor-scroll", tabindex: "0" },
      el("table", { class: "monitor", "aria-labelledby": id },
        el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
        body)),
  ];
}

function bannerText(unconsumed) {
  if (unconsumed.length === 1) {
    const [q] = unconsumed;
    const messages = q.depth === 1 ? "1 message waits" : `${q.depth} messages wait`;
    return `${messages} in queue “${visible(q.name)}” and no worker consumes it: start a worker for it (celery worker -Q ${visible(q.name)}).`;
  }
  const list = unconsumed.map((q) => `${visible(q.name)} (${q.depth})`).join(", ");
  return `${unconsumed.length} queues have messages and no worker consumes them: ${list}.`;
}

export function mount(root, ctx) {
  const banner = el("p", { class: "queue-banner", role: "alert" });
  const workersBody = el("tbody");
  const queuesBody = el("tbody");
  const workersEmpty = el("p", { class: "empty" });
  const queuesEmpty = el("p", { class: "empty" });
  const status = el("p", { class: "monitor-status", role: "status" });
  root.replaceChildren(
    el("h2", { id: "workers-heading" }, "Workers & queues"),
    banner,
    status,
    ...table("workers-list-heading", "Workers",
      ["Worker", "Status", "Pool", "Concurrency", "Active", "Processed", "Failed", "Last heartbeat"], workersBody),
    workersEmpty,
    ...table("queues-list-heading", "Queues", ["Queue", "Waiting", "Oldest message", "Consumers"], queuesBody),
    queuesEmpty);

  const state = { workers: null, queues: null };

  function render() {
    const now = Date.now();
    if (state.workers) {
      workersBody.replaceChildren(...state.workers.map((w) => workerRow(w, now)));
      setText(workersEmpty, state.workers.length ? "" : "No worker has been heard from yet.");
    }
    if (state.queues) {
      queuesBody.replaceChildren(...state.queues.map((q) => queueRow(q, now)));
      setText(queuesEmpty, state.queues.length ? "" : "No queue is known yet.");
      const unconsumed = state.queues.filter((q) => q.unconsumed);
      setText(banner, unconsumed.length ? bannerText(unconsumed) : "");
      banner.classList.toggle("shown", unconsumed.length > 0);
    }
  }

  // Between pushes only the ages move: their text is recounted, nothing is rebuilt.
  function tick() {
    if (!ctx.live.connected) return;  // stale: times stop (the page says since when)
    const now = Date.now();
    for (const node of root.querySelectorAll("time[data-since]")) {
      const age = since(node.dataset.since, now);
      if (age === null) continue;
      setText(node, node.closest(".worker") ? `${duration(age)} ago` : duration(age));
    }
  }

  async function load() {
    const [workers, queues] = await Promise.all([
      ctx.api("GET", ctx.config.apiWorkers), ctx.api("GET", ctx.config.apiQueues)]);
    if (workers.status === 200 && state.workers === null) state.workers = workers.body.workers || [];
    if (queues.status === 200 && state.queues === null) state.queues = queues.body.queues || [];
    const failed = [workers, queues].find((r) => r.status !== 200);
    setText(status, failed ? `Could not load the workers: ${failed.body.error || "the server did not answer"}.` : "");
    render();
  }

  const off = ctx.on("workers", (data) => {
    state.workers = data.workers || [];
    state.queues = data.queues || [];
    setText(status, "");
    render();
  });
  const timer = setInterval(tick, TICK_MS);
  load();
  return () => {
    off();
    clearInterval(timer);
  };
}
