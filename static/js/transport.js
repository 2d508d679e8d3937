// The live connection: Socket.IO events into the task store and to ctx.on listeners, live/stale.
//
// The page asks for deltas: a pushed "tasks" message then has {tasks: [whole task objects],
// changes: [{id, version, base, state, ...the fields that changed}]}. A change applies to the task
// held at version `base`; merged here, so the store and every ctx.on("tasks") listener still get
// whole task objects. A change for a task not held at `base` (not in the snapshot, dropped by the
// store's limit, or a snapshot another web process had moved on) reads that task again; past
// snapshotActiveLimit such reads waiting, the change is dropped and "behind" is emitted (the list
// then fetches its page and counts again).
import { finished } from "./state.js";

const READS_AT_ONCE = 4;  // tasks read again at the same time

// Starts the connection. `emit(event, data)` reaches ctx.on listeners; `live` is ctx.live.
// The handshake's size: under the server's limit on one message (web/sockets.py MAX_CLIENT_MESSAGE).
const MAX_AUTH_BYTES = 200000;

export function connect(ctx, emit) {
  const { config, tasks, live } = ctx;
  if (typeof window.io !== "function") {
    emit("stale", { reason: "the live connection's script did not load" });
    return null;
  }
  // Every (re)connect names the unfinished tasks this tab holds: the snapshot brings each back as it
  // is now, so one that ended while the tab was away is never left "running".
  const limit = Number(config.snapshotActiveLimit) || 2000;
  const auth = (send) => {
    const ids = [];
    let bytes = 0;
    for (const task of tasks.values()) {
      if (ids.length >= limit) break;
      if (finished(task)) continue;
      bytes += task.id.length * 3 + 3;  // at most 3 bytes a character, quotes and comma
      if (bytes > MAX_AUTH_BYTES) break;
      ids.push(task.id);
    }
    send({ tasks: ids, deltas: true });
  };
  const socket = window.io({ path: config.socketPath || "/socket.io", reconnectionDelayMax: 5000, auth });
  const seen = () => { live.lastUpdate = new Date(); };
  socket.on("connect", () => {
    live.connected = true;
    seen();
    emit("live", {});
  });
  // The server refuses a connection whose access ended (signed out in another tab, say) with the
  // message "unauthorized" (web/sockets.py UNAUTHORIZED); Socket.IO does not retry a refusal.
  // "unavailable": the server could not look the user up (Redis away); Socket.IO does not retry
  // that refusal either, so the page does, a few seconds later.
  socket.on("connect_error", (error) => {
    if (error && error.message === "unauthorized") window.location.assign(config.login || "/login");  // signed out
    if (error && error.message === "unavailable") {
      emit("reconnecting", {});
      setTimeout(() => { if (!socket.connected) socket.connect(); }, 3000);
    }
  });
  socket.on("disconnect", (reason) => {
    live.connected = false;
    emit("stale", { reason });
    // The server ends a connection whose access ended (sign-out, removed account, new role), and
    // Socket.IO does not reconnect by itself then: load the page again, which goes to the sign-in
    // page, or shows what the new role may see.
    if (reason === "io server disconnect") window.location.reload();
  });
  socket.io.on("reconnect_attempt", () => emit("reconnecting", {}));
  socket.on("snapshot", (data) => {
    seen();
    for (const task of data.tasks || []) tasks.upsert(task);
    emit("snapshot", data);
  });
  socket.on("snapshot_error", (data) => emit("snapshot_error", data));
  // Tasks to read again (id -> the version the change needed); bounded like a snapshot's names.
  const stale = new Map();
  let reading = 0;
  const readAgain = () => {
    while (reading < READS_AT_ONCE && stale.size) {
      const [id, version] = stale.entries().next().value;
      stale.delete(id);
      const held = tasks.get(id);
      if (held && (held.version || 0) >= version) continue;  // a whole object came meanwhile
      reading += 1;
      ctx.api("GET", `${config.apiTasks}/${encodeURIComponent(id)}`).then(({ status, body }) => {
        if (status === 200 && body && body.id === id && tasks.upsert(body)) emit("tasks", { tasks: [body] });
      }).finally(() => {
        reading -= 1;
        readAgain();
      });
    }
  };
  // The whole objects a message stands for: its tasks, and each change merged into the task held.
  const whole = (data) => {
    const found = data.tasks || [];
    if (!Array.isArray(data.changes) || !data.changes.length) return found;
    const all = [...found];
    let dropped = false;
    for (const change of data.changes) {
      const held = tasks.get(change.id);
      if (held && (held.version || 0) === change.base) {
        const merged = { ...held, ...change };
        delete merged.base;
        all.push(merged);
      } else if (!held || (held.version || 0) < change.version) {
        // Past the bound the change is lost to this tab: a view then reads its list again.
        if (stale.size < limit || stale.has(change.id)) stale.set(change.id, change.version);
        else dropped = true;
      }
    }
    readAgain();
    if (dropped) emit("behind", {});
    return all;
  };
  socket.on("tasks", (data) => {
    seen();
    const found = whole(data);
    for (const task of found) tasks.upsert(task);
    emit("tasks", { ...data, tasks: found, changes: undefined });
  });
  socket.on("workers", (data) => {
    seen();
    emit("workers", data);
  });
  return socket;
}
