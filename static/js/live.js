// Buttons whose action needs the server (launch, cancel, retry, re-run, bulk): disabled, with the
// reason as their description (title), while the page is not live; enabled again when it is.
//
// main.js calls setLive(false) on "stale" and setLive(true) on "live". A view marks each such
// button with needsServer(button) when it builds it, so one built while the page is not live
// starts disabled. A button its own code disabled (a request in flight) stays so: only what this
// module disabled is enabled again, and enable(button) is how that code ends its own disabling.
export const REASON = "Not available while the page is not live: the server cannot be reached. "
  + "It comes back by itself when the connection does.";

let live = true;

function off(button) {
  if (button.dataset.staleOff !== undefined) return;
  button.dataset.staleOff = button.disabled ? "was" : "";
  button.dataset.staleTitle = button.getAttribute("title") ?? "\u0000";
  button.disabled = true;
  button.setAttribute("title", REASON);
}

function on(button) {
  if (button.dataset.staleOff === undefined) return;
  if (button.dataset.staleOff !== "was") button.disabled = false;
  const title = button.dataset.staleTitle;
  if (title === undefined || title === "\u0000") button.removeAttribute("title");
  else button.setAttribute("title", title);
  delete button.dataset.staleOff;
  delete button.dataset.staleTitle;
}

// Marks `button` as needing the server (disabled at once while not live); -> the button.
export function needsServer(button) {
  if (!button) return button;
  button.dataset.needsServer = "";
  if (!live) off(button);
  return button;
}

export function isLive() {
  return live;
}

// Ends a button's own disabling (its request answered): it stays disabled while not live.
export function enable(button) {
  if (!button) return;
  if (live || button.dataset.needsServer === undefined) button.disabled = false;
  else if (button.dataset.staleOff === "was") button.dataset.staleOff = "";
}

// The page became live (true) or stale (false): every marked button in the page follows.
export function setLive(value) {
  live = Boolean(value);
  for (const button of document.querySelectorAll("button[data-needs-server]")) {
    if (live) on(button); else off(button);
  }
}
