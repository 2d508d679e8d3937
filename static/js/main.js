// The page's entry: builds ctx, connects, and shows the view the URL names (/, /tasks/<id>, ...).
//
// Each view module exports mount(root, ctx). It may return a cleanup function, or an object
// {unmount(), update(route)}: update is called instead of a new mount when only the query string
// of the same view changes (filters, paging), so the view keeps its focus and its rows.
// ctx.route is {view, path, id, query (URLSearchParams)} for the view being shown.
import { api } from "./api.js";
import { announce } from "./announce.js";
import { clock, el, setText } from "./dom.js";
import { createStore } from "./state.js";
import { connect } from "./transport.js";
import { setLive } from "./live.js";

const body = document.body;
const config = body.dataset;
const listeners = new Map();   // event -> Set(fn)

function emit(event, data) {
  for (const fn of [...(listeners.get(event) || [])]) {
    try {
      fn(data);
    } catch (error) {
      console.error(error);
    }
  }
}

const ctx = {
  config,
  user: { name: config.userName || "", role: config.userRole || "viewer" },
  api,
  tasks: createStore(Number(config.storeLimit) || 5000),
  on(event, fn) {
    if (!listeners.has(event)) listeners.set(event, new Set());
    listeners.get(event).add(fn);
    return () => listeners.get(event).delete(fn);
  },
  live: { connected: false, lastUpdate: null },
  navigate,
  announce,
  titles: new Map(),
  route: null,
  emit,
};
ctx.catalog = api("GET", config.apiCatalog).then(({ status, body: data }) => {
  const entries = status === 200 && Array.isArray(data.tasks) ? data.tasks : null;
  for (const entry of entries || []) ctx.titles.set(entry.task, entry.title);
  emit("titles", ctx.titles);
  return entries;
});

// ---- routes --------------------------------------------------------------------------------

// view name -> [container id, module path]
const VIEWS = {
  tasks: ["view-tasks", "./table.js"],
  detail: ["view-detail", "./detail.js"],
  workers: ["view-workers", "./workers.js"],
  charts: ["view-charts", "./charts.js"],
  audit: ["view-audit", "./audit.js"],
};

function routeOf(location) {
  const path = location.pathname;
  const query = new URLSearchParams(location.search);
  const base = { path, query, id: null };
  if (path === "/" || path === "") return { ...base, view: "tasks" };
  if (path.startsWith("/tasks/") && path.length > "/tasks/".length) {
    return { ...base, view: "detail", id: decodeURIComponent(path.slice("/tasks/".length)) };
  }
  const name = path.replace(/^\/+|\/+$/g, "");
  if (name === "workers" || name === "charts" || name === "audit") return { ...base, view: name };
  return { ...base, view: null };
}

let current = null;   // {view, handle, path}
let launchMounted = false;

function cleanup(handle) {
  try {
    if (typeof handle === "function") handle();
    else if (handle && typeof handle.unmount === "function") handle.unmount();
  } catch (error) {
    console.error(error);
  }
}

async function show(route) {
  ctx.route = route;
  for (const [name, [id]] of Object.entries(VIEWS)) {
    const section = document.getElementById(id);
    if (section) section.hidden = name !== route.view;
  }
  for (const link of document.querySelectorAll(".nav a")) {
    if (link.dataset.view === route.view || (route.view === "detail" && link.dataset.view === "tasks")) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  // The skip link goes to the task list on the tasks view, else to the start of the view shown.
  const skip = document.querySelector(".skip-link");
  if (skip) {
    const onTasks = route.view === "tasks";
    skip.setAttribute("href", onTasks ? "#tasks-heading" : "#main");
    skip.textContent = onTasks ? "Skip to the task list" : "Skip to the content";
  }
  if (route.view === "tasks") mountLaunch();
  if (current && current.view === route.view && current.path === route.path && current.handle
      && typeof current.handle.update === "function") {
    current.handle.update(route);
    return;
  }
  if (current) cleanup(current.handle);
  current = null;
  if (!route.view) {
    const section = document.getElementById("view-missing");
    section.hidden = false;
    return;
  }
  document.getElementById("view-missing").hidden = true;
  const [containerId, module] = VIEWS[route.view];
  const root = document.getElementById(containerId).querySelector("[data-view-root]")
    || document.getElementById(containerId);
  root.replaceChildren();
  const mine = { view: route.view, path: route.path, handle: null };
  current = mine;
  try {
    const view = await import(module);
    if (current !== mine) return;  // navigated away meanwhile
    mine.handle = await view.mount(root, ctx);
  } catch (error) {
    console.error(error);
    if (current === mine) {
      root.replaceChildren(el("p", { class: "load-error" },
        "This part of the page could not be loaded. Reload the page to try again."));
    }
  }
}

// The launch forms sit above the task list, mounted once (they keep what was typed). On a phone
// they wait folded behind "Launch a task", so that the list comes first.
const PHONE = "(max-width: 640px)";

async function mountLaunch() {
  if (launchMounted) return;
  launchMounted = true;
  const box = document.getElementById("launch-box");
  if (box) box.open = !window.matchMedia(PHONE).matches;
  const root = document.getElementById("launch");
  if (!root) return;
  if (ctx.user.role === "viewer") {
    root.replaceChildren(el("p", { class: "role-note" },
      "You are signed in as a viewer: you can follow tasks here, but not launch or cancel them."));
    return;
  }
  try {
    const forms = await import("./forms.js");
    await forms.mount(root, ctx);
  } catch (error) {
    console.error(error);
    root.replaceChildren(el("p", { class: "load-error" },
      "The launch forms could not be loaded. Reload the page to try again."));
  }
}

export function navigate(url) {
  const target = new URL(url, window.location.href);
  if (target.origin !== window.location.origin) {
    window.location.assign(target.href);
    return;
  }
  if (target.pathname + target.search !== window.location.pathname + window.location.search) {
    window.history.pushState(null, "", target.pathname + target.search + target.hash);
  }
  show(routeOf(target));
}

window.addEventListener("popstate", () => show(routeOf(window.location)));

// Links to the page's own views open without a reload (new tab, modifiers, other paths: as usual).
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest && event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const target = new URL(link.href, window.location.href);
  if (target.origin !== window.location.origin || !routeOf(target).view) return;
  // A link within the page (the skip link): the browser scrolls and moves the focus itself.
  if (target.hash && target.pathname === window.location.pathname && target.search === window.location.search) return;
  event.preventDefault();
  navigate(target.href);
});

// ---- the connection badge and the stale banner ------------------------------------------

const badge = document.getElementById("connection");
const staleBanner = document.getElementById("stale");

function setConnection(state, text) {
  badge.className = `connection ${state}`;
  setText(badge, text);
}

function setStale(stale) {
  body.classList.toggle("stale", stale);
  setLive(!stale);  // buttons that need the server: disabled with the reason while not live
  if (!staleBanner) return;
  staleBanner.hidden = !stale;
  const when = ctx.live.lastUpdate ? `last update at ${clock(ctx.live.lastUpdate)}` : "no update received yet";
  setText(staleBanner, `Not live — ${when}. The page catches up by itself when the connection is back.`);
}

ctx.on("live", () => {
  setConnection("live", "Live");
  setStale(false);
});
ctx.on("stale", () => {
  setConnection("reconnecting", "Reconnecting…");
  setStale(true);
});
ctx.on("reconnecting", () => setConnection("reconnecting", "Reconnecting…"));
ctx.on("snapshot_error", () => setConnection("reconnecting", "Live, but Redis is unavailable"));

show(routeOf(window.location));
connect(ctx, emit);
