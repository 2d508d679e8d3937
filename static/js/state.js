// The page's task store (the highest version of each task wins) and how a state reads to a person.

// Which state may replace which is decided on the server (web/lifecycle.py); each task object
// carries a `version` that grows with every change, and the page keeps the highest one.
export const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED", "LOST", "UNKNOWN"]);
// Celery's state names as a person reads them; a task's own states (update_state) show by name.
export const LABELS = {
  PENDING: "queued", RECEIVED: "received", STARTED: "started", PROGRESS: "running",
  RETRY: "retrying", SUCCESS: "succeeded", FAILURE: "failed", REVOKED: "cancelled",
  REJECTED: "rejected", IGNORED: "ignored", LOST: "lost (worker gone)", UNKNOWN: "outcome unknown",
};
export const KNOWN = new Set(Object.keys(LABELS));

export function finished(task) {
  return TERMINAL.has(task.state);
}

// The state as a person reads it: "retrying" for a retried task waiting for its next attempt,
// "expired" for a revoke by expiry, and the worker's trouble beside an unfinished state.
export function stateLabel(task) {
  const waiting = (task.state === "PENDING" || task.state === "RECEIVED") && task.retries > 0;
  let label = waiting ? LABELS.RETRY : LABELS[task.state] || task.state;
  if (task.state === "REVOKED" && task.error && task.error.message === "expired") label = "expired";
  if (task.worker_status && !TERMINAL.has(task.state)) label = `${label} · worker ${task.worker_status}`;
  return label;
}

// The CSS class of a state: state-SUCCESS, ..., state-CUSTOM for a task's own states.
export function stateClass(task) {
  return `state-${KNOWN.has(task.state) ? task.state : "CUSTOM"}`;
}

// get(id), upsert(task) -> bool (true when kept), subscribe(fn(changedIds)) -> unsubscribe;
// `moves`: how many upserts brought a new task or a new state (a view reads it before and after a
// request, to know whether what it was answered may have moved on meanwhile).
// Subscribers run at most once per animation frame with the ids changed since the last run.
// About `limit` tasks are kept: past it, the least recently changed finished ones are dropped
// (a view keeps its own rows; a later push brings a dropped task back; a subscriber may be told
// of an id the store no longer holds).
export function createStore(limit = 5000) {
  const tasks = new Map();
  const subscribers = new Set();
  let pending = new Set();
  let scheduled = false;
  let moves = 0;

  function flush() {
    scheduled = false;
    const changed = pending;
    pending = new Set();
    for (const fn of [...subscribers]) {
      try {
        fn(changed);
      } catch (error) {
        console.error(error);
      }
    }
  }

  // Past a quarter over the limit, back down to it in one pass (amortised: a snapshot of
  // thousands of tasks costs one pass, not one per task).
  function prune() {
    if (tasks.size <= limit + Math.ceil(limit / 4)) return;
    for (const [id, task] of tasks) {
      if (tasks.size <= limit) break;
      if (TERMINAL.has(task.state)) tasks.delete(id);
    }
  }

  return {
    get: (id) => tasks.get(id),
    has: (id) => tasks.has(id),
    values: () => tasks.values(),
    get size() { return tasks.size; },
    get moves() { return moves; },
    upsert(task) {
      if (!task || !task.id) return false;
      const old = tasks.get(task.id);
      if (old && (old.version || 0) > (task.version || 0)) return false;
      if (!old || old.state !== task.state) moves += 1;
      if (old) tasks.delete(task.id);  // Map order = least recently changed first
      tasks.set(task.id, task);
      pending.add(task.id);
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(flush);
      }
      prune();
      return true;
    },
    subscribe(fn) {
      subscribers.add(fn);
      return () => subscribers.delete(fn);
    },
  };
}
