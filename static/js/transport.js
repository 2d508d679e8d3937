// The live connection: Socket.IO events into the task store and to ctx.on listeners, live/stale.
import { finished } from "./state.js";

// Starts the connection. `emit(event, data)` reaches ctx.on listeners; `live` is ctx.live.
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
    for (const task of tasks.values()) {
      if (ids.length >= limit) break;
      if (!finished(task)) ids.push(task.id);
    }
    send({ tasks: ids });
  };
  const socket = window.io({ path: config.socketPath || "/socket.io", reconnectionDelayMax: 5000, auth });
  const seen = () => { live.lastUpdate = new Date(); };
  socket.on("connect", () => {
    live.connected = true;
    seen();
    emit("live", {});
  });
  socket.on("connect_error", (error) => {
    if (error && error.message === "unauthorized") window.location.assign(config.login || "/login");  // signed out
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
  socket.on("tasks", (data) => {
    seen();
    for (const task of data.tasks || []) tasks.upsert(task);
    emit("tasks", data);
  });
  socket.on("workers", (data) => {
    seen();
    emit("workers", data);
  });
  return socket;
}
