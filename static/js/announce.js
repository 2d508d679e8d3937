// Screen-reader announcements: one polite live region (role=status), at most one message per
// MIN_GAP_MS; messages that arrive meanwhile are merged into the next one with a count. It follows
// the tasks launched from this page (followLaunch) and says when each starts and how it ends.
import { visible } from "./dom.js";
import { LABELS } from "./state.js";

// A screen reader needs time to read a sentence; faster messages would cut each other off.
const MIN_GAP_MS = 2000;
// What is announced of a followed task: the states a person waits for.
const SAID = { STARTED: "started", PROGRESS: "started", SUCCESS: "succeeded", FAILURE: "failed", REVOKED: "cancelled" };
// At most this many launches are followed at once (the oldest is dropped past it).
const MAX_FOLLOWED = 200;

let region = null;
let queue = [];          // messages waiting for the gap to pass
let lastAt = -Infinity;  // performance.now() of the last message said
let timer = null;

function theRegion() {
  if (region && region.isConnected) return region;
  region = document.getElementById("announcer");
  if (!region) {
    region = document.createElement("div");
    region.id = "announcer";
    region.className = "visually-hidden";
    document.body.append(region);
  }
  region.setAttribute("role", "status");
  region.setAttribute("aria-live", "polite");
  region.setAttribute("aria-atomic", "true");
  return region;
}

// One message in full (the most important: a failure, else an end, else the newest) and the others
// summed up: "Report 3f2a0000 failed: ValueError. 2 more tasks changed: 1 started, 1 succeeded."
const WEIGHT = { failed: 3, cancelled: 2, succeeded: 2, started: 1 };

function merged(messages) {
  if (messages.length === 1) return messages[0].text;
  let main = messages[messages.length - 1];
  for (const message of messages) if ((WEIGHT[message.kind] || 0) > (WEIGHT[main.kind] || 0)) main = message;
  const counts = new Map();
  let others = 0;
  for (const message of messages) {
    if (message === main) continue;
    if (message.kind) counts.set(message.kind, (counts.get(message.kind) || 0) + 1);
    else others += 1;
  }
  const changed = [...counts.values()].reduce((a, b) => a + b, 0);
  const parts = [];
  if (changed) {
    const what = [...counts].map(([kind, n]) => `${n} ${kind}`).join(", ");
    parts.push(`${changed} more ${changed === 1 ? "task" : "tasks"} changed: ${what}.`);
  }
  if (others) parts.push(`${others} more ${others === 1 ? "message" : "messages"}.`);
  return `${main.text} ${parts.join(" ")}`;
}

function say() {
  timer = null;
  if (!queue.length) return;
  const text = merged(queue);
  queue = [];
  lastAt = performance.now();
  const node = theRegion();
  // The same sentence twice in a row is not re-read by some screen readers: empty it first.
  if (node.textContent === text) node.textContent = "";
  node.textContent = text;
}

// Says `text` politely, now or once MIN_GAP_MS has passed since the last message.
// `kind` ("succeeded", "failed", ...) lets a merged message count the others by kind.
export function announce(text, kind = null) {
  const value = String(text ?? "").trim();
  if (!value) return;
  queue.push({ text: value, kind });
  if (timer !== null) return;
  const wait = Math.max(0, lastAt + MIN_GAP_MS - performance.now());
  if (wait === 0) say();
  else timer = setTimeout(say, wait);
}

// Another live region just spoke (a form's status): the announcer's next message waits its turn.
export function spoken() {
  lastAt = performance.now();
}

// ---- the tasks launched from this page ---------------------------------------------------

const followed = new Map();  // id -> {title, said: the last state word announced}
let unsubscribe = null;

function check(ctx, changed) {
  for (const id of changed) {
    const follow = followed.get(id);
    if (!follow) continue;
    const task = ctx.tasks.get(id);
    const word = task ? SAID[task.state] : undefined;
    if (!word || word === follow.said) continue;
    // A task that started and ended between two frames is said to have ended only.
    follow.said = word;
    announce(sentence(follow.title, task, word), word);
    if (word !== "started") followed.delete(id);
  }
  if (!followed.size && unsubscribe) {
    unsubscribe();
    unsubscribe = null;
  }
}

// "Report 3f2a0000 failed: ValueError.", "Report 3f2a0000 was cancelled.", "... started." — the
// task by its title and short id, as its row shows them, in the table's words (state.js LABELS).
function sentence(title, task, word) {
  const name = `${title} ${String(task.id).slice(0, 8)}`;
  if (word === "failed") {
    const type = task.error && task.error.type ? `: ${visible(task.error.type)}` : "";
    return `${name} ${LABELS.FAILURE}${type}.`;
  }
  if (word === "cancelled") return `${name} was ${LABELS.REVOKED}.`;
  return `${name} ${word}.`;
}

// Follows `task` (a task object just launched from this page): its start and its end are announced.
export function followLaunch(ctx, task, title) {
  if (!task || !task.id) return;
  if (followed.size >= MAX_FOLLOWED) followed.delete(followed.keys().next().value);
  followed.set(task.id, { title: visible(title || ctx.titles.get(task.name) || task.name || "The task"), said: null });
  if (!unsubscribe) unsubscribe = ctx.tasks.subscribe((changed) => check(ctx, changed));
  check(ctx, new Set([task.id]));
}

export function mount() {
  theRegion();
}

theRegion();
