// Charts (/charts): per task type over the last hour, tasks ended and failed per minute and
// run-time p50/p95, drawn with uPlot (from npm, built into static/vendor), from GET /api/stats.
// Live: fetched again every REFRESH_MS, and soon after a pushed batch ends a task. Each chart has
// a text alternative (its figure's caption and a one-sentence summary), and a table gives every
// task type's figures as text.
import { el, setText, visible } from "./dom.js";

const REFRESH_MS = 10_000;
const SOON_MS = 2_000;       // after a pushed ending, at most this long until the next fetch
const HEIGHT = 220;

function cssVar(name, fallback) {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

let loading = null;   // uPlot, loaded once for the page
function loadUPlot(ctx) {
  if (!loading) {
    const base = ctx.config.static || "/static/";
    if (!document.querySelector("link[data-uplot]")) {
      document.head.append(el("link", { rel: "stylesheet", href: `${base}vendor/uplot.min.css`, "data-uplot": "" }));
    }
    loading = import(`${base}vendor/uplot.js`).then((module) => module.default);
  }
  return loading;
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
}

function clockOf(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

// One sentence a screen reader reads for a chart.
function summary(stats, task, kind) {
  const minutes = Math.round(stats.window / 60);
  if (kind === "counts") {
    const busiest = task.throughput.reduce((best, n, i) => (n > task.throughput[best] ? i : best), 0);
    return `${visible(task.name)}, last ${minutes} minutes: ${task.ended} ended, ${task.failed} failed; `
      + `busiest minute ${clockOf(stats.times[busiest])} with ${task.throughput[busiest]} ended.`;
  }
  return `${visible(task.name)}, last ${minutes} minutes: run time p50 ${seconds(task.runtime_p50)}, `
    + `p95 ${seconds(task.runtime_p95)}.`;
}

function figure(id, caption) {
  const plot = el("div", { class: "chart-plot", role: "img", "aria-label": caption });
  const node = el("figure", { class: "chart", "aria-labelledby": `${id}-caption` },
    el("figcaption", { id: `${id}-caption` }, caption), plot);
  return { node, plot, chart: null };
}

export function mount(root, ctx) {
  const status = el("p", { class: "charts-status", role: "status" });
  const select = el("select", { id: "chart-task" });
  const picker = el("p", { class: "chart-picker" }, el("label", { for: "chart-task" }, "Task type "), select);
  const counts = figure("chart-counts", "Tasks ended and failed per minute");
  const runtime = figure("chart-runtime", "Run time per minute, p50 and p95 (seconds)");
  const tableBody = el("tbody");
  const note = el("p", { class: "charts-note" });
  const table = el("div", { class: "chart-table", role: "region", "aria-label": "Last hour by task type", tabindex: "0" },
    el("table", { class: "monitor" },
      el("caption", {}, "Last hour by task type"),
      el("thead", {}, el("tr", {}, ...["Task type", "Ended", "Failed", "Run time p50", "Run time p95"]
        .map((h) => el("th", { scope: "col" }, h)))),
      tableBody));
  const charts = el("div", { class: "charts" }, counts.node, runtime.node);
  root.replaceChildren(el("h2", {}, "Charts"), status, picker, charts, table, note);

  let stats = null;
  let chosen = null;
  let uPlot = null;
  let closed = false;
  let timer = null;
  let soon = false;     // a fetch is due within SOON_MS already

  function title(name) {
    const shown = ctx.titles.get(name);
    return visible(shown ? `${shown} (${name})` : name);
  }

  function draw(fig, data, series) {
    const width = Math.max(280, fig.plot.clientWidth || charts.clientWidth || 600);
    if (fig.chart && fig.chart.series.length === series.length + 1) {
      fig.chart.setData(data);
      return;
    }
    if (fig.chart) fig.chart.destroy();
    const text = cssVar("--text", "#1f2328");
    const line = cssVar("--line", "#d0d7de");
    const axis = { stroke: text, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    fig.chart = new uPlot({
      width, height: HEIGHT,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      series: [{}, ...series],
      axes: [axis, { ...axis, size: 56 }],
    }, data, fig.plot);
  }

  function render() {
    if (!stats) return;
    const tasks = stats.tasks || [];
    // The task type menu: the busiest first; the choice is kept across refreshes.
    const names = tasks.map((t) => t.name);
    if (!names.includes(chosen)) chosen = names[0] || null;
    const current = [...select.options].map((o) => o.value).join("\n");
    if (current !== names.join("\n")) {
      select.replaceChildren(...tasks.map((t) => el("option", { value: t.name }, title(t.name))));
    }
    if (chosen) select.value = chosen;
    picker.hidden = tasks.length === 0;
    charts.hidden = tasks.length === 0;
    tableBody.replaceChildren(...tasks.map((t) => el("tr", {},
      el("th", { scope: "row" }, title(t.name)),
      el("td", { "data-label": "Ended", class: "num" }, t.ended),
      el("td", { "data-label": "Failed", class: "num" }, t.failed),
      el("td", { "data-label": "Run time p50", class: "num" }, seconds(t.runtime_p50)),
      el("td", { "data-label": "Run time p95", class: "num" }, seconds(t.runtime_p95)))));
    const notes = [];
    if (!tasks.length) notes.push(`No task ended in the last ${Math.round(stats.window / 60)} minutes.`);
    if (stats.names_truncated) notes.push("Only the busiest task types are shown.");
    if (stats.truncated) notes.push(`Counted over the newest ${stats.scanned} tasks only.`);
    setText(note, notes.join(" "));
    const task = tasks.find((t) => t.name === chosen);
    if (!task || !uPlot) return;
    const ok = cssVar("--accent", "#0969da");
    const bad = cssVar("--bad", "#cf222e");
    const warn = cssVar("--warn", "#7d4e00");
    // Ended as bars, failed as a line over them; a minute without endings has no run time (a gap).
    draw(counts, [stats.times, task.throughput, task.failures], [
      { label: "Ended", stroke: ok, fill: ok, width: 1, paths: uPlot.paths.bars({ size: [0.7, 16] }),
        points: { show: false } },
      { label: "Failed", stroke: bad, width: 2, points: { show: false } }]);
    draw(runtime, [stats.times, task.p50, task.p95], [
      { label: "p50", stroke: ok, width: 2, spanGaps: false, points: { show: true, size: 6, fill: ok } },
      { label: "p95", stroke: warn, width: 2, dash: [6, 4], spanGaps: false,
        points: { show: true, size: 6, fill: warn } }]);
    counts.plot.setAttribute("aria-label", summary(stats, task, "counts"));
    runtime.plot.setAttribute("aria-label", summary(stats, task, "runtime"));
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    soon = false;
    const { status: code, body } = await ctx.api("GET", ctx.config.apiStats);
    if (closed) return;
    if (code === 200) {
      stats = body;
      setText(status, "");
      render();
    } else {
      setText(status, `Could not load the figures: ${body.error || "the server did not answer"}.`);
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  select.addEventListener("change", () => {
    chosen = select.value;
    render();
  });
  // A pushed batch that ends a task: fetch again soon (the server keeps its figures a few seconds).
  const off = ctx.on("tasks", (data) => {
    const ended = (data.tasks || []).some((t) => t.finished);
    if (ended && !closed && !soon) {
      soon = true;
      clearTimeout(timer);
      timer = setTimeout(refresh, SOON_MS);
    }
  });
  const offTitles = ctx.on("titles", render);
  const resize = new ResizeObserver(() => {
    for (const fig of [counts, runtime]) {
      if (fig.chart && fig.plot.clientWidth) fig.chart.setSize({ width: fig.plot.clientWidth, height: HEIGHT });
    }
  });
  resize.observe(charts);
  loadUPlot(ctx).then((loaded) => {
    uPlot = loaded;
    render();
  }).catch(() => setText(status, "The chart library could not be loaded; the table below has the figures."));
  refresh();
  return () => {
    closed = true;
    clearTimeout(timer);
    off();
    offTitles();
    resize.disconnect();
    for (const fig of [counts, runtime]) if (fig.chart) fig.chart.destroy();
  };
}
