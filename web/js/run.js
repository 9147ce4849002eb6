// The run page: header, one chart per metric family, a layer x step heatmap, live over SSE.

import { FINAL_STATUSES, api, formatTime } from "./api.js";
import { HeatmapChart, LineChart } from "./charts.js";
import { clearError, el, setStatusBadge, showError } from "./dom.js";
import { openLive } from "./live.js";

const POINTS = 2000; // per-series budget of the initial read; the server downsamples to it
const HEATMAP_POINTS = 400; // step columns of the heatmap
const HEATMAP_REFRESH_MS = 2000; // live heatmap re-fetch at most this often

/** The fixed charts: which series each one draws, in the order they are tried. */
const CHARTS = [
  { key: "loss", match: (name) => name.startsWith("loss"), ytitle: "loss" },
  { key: "lr", match: (name) => name.startsWith("lr/"), ytitle: "learning rate" },
  {
    key: "acc",
    match: (name) => name.startsWith("acc") || name.startsWith("eval/"),
    ytitle: "value",
    mode: "lines+markers",
  },
  { key: "gradnorm", match: (name) => name === "grad_norm/total", ytitle: "‖g‖₂" },
];

function runIdFromPath() {
  const parts = window.location.pathname.split("/").filter(Boolean);
  const at = parts.indexOf("runs");
  return decodeURIComponent(at >= 0 && parts[at + 1] ? parts[at + 1] : parts[parts.length - 1]);
}

function familyOf(name) {
  const slash = name.indexOf("/");
  return slash > 0 ? name.slice(0, slash) : name;
}

/** Where a series goes: {kind: "chart", key} | {kind: "layer", stat} | {kind: "other", family}. */
function classify(name, state) {
  const slash = name.indexOf("/");
  if (slash > 0 && name !== "grad_norm/total") {
    const stat = name.slice(0, slash);
    const layer = name.slice(slash + 1);
    if (state.layers.has(layer)) return { kind: "layer", stat };
  }
  for (const chart of CHARTS) if (chart.match(name)) return { kind: "chart", key: chart.key };
  return { kind: "other", family: familyOf(name) };
}

function valueText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function fillTable(table, object, emptyText) {
  table.replaceChildren();
  const entries = object && typeof object === "object" ? Object.entries(object) : [];
  if (!entries.length) {
    table.append(el("tr", {}, [el("td", { className: "muted", text: emptyText })]));
    return;
  }
  entries.sort(([a], [b]) => a.localeCompare(b));
  for (const [key, value] of entries) {
    table.append(
      el("tr", {}, [el("th", { text: key, attrs: { scope: "row" } }), el("td", { text: valueText(value) })]),
    );
  }
}

function renderHeader(run) {
  document.title = `${run.name || run.id} · trickscope`;
  document.getElementById("run-name").textContent = run.name || run.id;
  setStatusBadge(document.getElementById("run-status"), run.status);
  document.getElementById("run-project").textContent = run.project || "";
  document.getElementById("run-id").textContent = run.id;
  document.getElementById("run-started").textContent = formatTime(run.started_at || run.created_at);
  document.getElementById("run-ended").textContent = run.ended_at ? formatTime(run.ended_at) : "\u2014";
  const tags = document.getElementById("run-tags");
  tags.replaceChildren(...(run.tags || []).map((tag) => el("span", { className: "tag", text: tag })));
  if (!(run.tags || []).length) tags.textContent = "\u2014";
  fillTable(document.getElementById("config-table"), run.config, "no config recorded");
  fillTable(document.getElementById("system-table"), run.system, "no system info recorded");
}

function slug(text) {
  return text.replace(/[^A-Za-z0-9_-]/g, "_");
}

/** A card for a family of "other" metrics, created on first need. */
function otherChart(state, family) {
  if (state.other.has(family)) return state.other.get(family);
  const div = el("div", { className: "chart", id: `chart-other-${slug(family)}` });
  const logButton = el("button", { className: "small", text: "log y", attrs: { type: "button" } });
  const card = el("section", { className: "card" }, [
    el("div", { className: "card-head" }, [el("h2", { text: family }), logButton]),
    div,
  ]);
  document.getElementById("other-charts").append(card);
  document.getElementById("other-section").hidden = false;
  const chart = new LineChart(div, { ytitle: family, mode: "lines+markers" });
  logButton.addEventListener("click", () => chart.toggleLogY());
  state.other.set(family, chart);
  return chart;
}

function chartFor(where, state) {
  if (where.kind === "chart") return state.charts.get(where.key);
  if (where.kind === "other") return otherChart(state, where.family);
  return null;
}

function updateStatOptions(state) {
  const select = document.getElementById("heatmap-stat");
  const stats = [...state.layerStats].sort();
  if (select.options.length === stats.length) return;
  select.replaceChildren(...stats.map((stat) => el("option", { text: stat, attrs: { value: stat } })));
  select.value = state.heatmapStat;
}

async function refreshHeatmap(state) {
  state.heatmapLastFetch = Date.now();
  try {
    const heatmap = await api.heatmap(state.runId, state.heatmapStat, HEATMAP_POINTS);
    for (const layer of heatmap.layers || []) state.layers.add(layer);
    await state.heatmap.render(heatmap);
  } catch (error) {
    showError(`Could not load the ${state.heatmapStat} heatmap: ${error.message}`);
  }
}

/** Re-fetch the heatmap now, or once the ~2 s throttle window has passed. */
function scheduleHeatmap(state) {
  if (state.heatmapTimer) return;
  const wait = Math.max(0, state.heatmapLastFetch + HEATMAP_REFRESH_MS - Date.now());
  state.heatmapTimer = window.setTimeout(async () => {
    await refreshHeatmap(state);
    state.heatmapTimer = null;
  }, wait);
}

function setLiveState(text) {
  const node = document.getElementById("live-state");
  node.textContent = text;
  node.dataset.state = text;
}

function onStatus(state, status) {
  if (status === "deleted") {
    // The stream ends for good; reconnecting would only meet a 404.
    if (state.live) state.live.close();
    state.live = null;
    setLiveState("ended");
    showError("This run was deleted.");
    return;
  }
  setStatusBadge(document.getElementById("run-status"), status);
  if (FINAL_STATUSES.has(status) && state.live) {
    state.live.close();
    state.live = null;
    setLiveState("ended");
    scheduleHeatmap(state);
  }
}

function onPoints(state, data) {
  const series = (data && data.series) || {};
  for (const [name, columns] of Object.entries(series)) {
    const steps = columns.step || [];
    const values = columns.value || [];
    const where = classify(name, state);
    if (where.kind === "layer") {
      if (!state.layerStats.has(where.stat)) {
        state.layerStats.add(where.stat);
        updateStatOptions(state);
      }
      if (where.stat === state.heatmapStat) scheduleHeatmap(state);
      continue;
    }
    chartFor(where, state).extend(name, steps, values);
  }
  if (data && data.status) onStatus(state, data.status);
}

async function load() {
  const state = {
    runId: runIdFromPath(),
    layers: new Set(),
    layerStats: new Set(),
    charts: new Map(),
    other: new Map(),
    heatmap: new HeatmapChart(document.getElementById("chart-heatmap")),
    heatmapStat: "grad_norm",
    heatmapLastFetch: 0,
    heatmapTimer: null,
    live: null,
  };
  for (const chart of CHARTS) {
    const div = document.getElementById(`chart-${chart.key}`);
    state.charts.set(chart.key, new LineChart(div, { ytitle: chart.ytitle, mode: chart.mode }));
  }
  for (const button of document.querySelectorAll("button[data-logy]")) {
    button.addEventListener("click", () => state.charts.get(button.dataset.logy).toggleLogY());
  }

  let run;
  let seriesList;
  try {
    [run, { series: seriesList }] = await Promise.all([api.run(state.runId), api.series(state.runId)]);
  } catch (error) {
    document.getElementById("run-name").textContent = "Run not available";
    showError(error.status === 404 ? `No run with id ${state.runId}.` : error.message);
    return;
  }
  renderHeader(run);
  for (const layer of run.layers || []) state.layers.add(layer);

  // Group the series by chart; per-layer ones only feed the heatmap.
  const groups = new Map();
  for (const item of seriesList || []) {
    const where = classify(item.name, state);
    if (where.kind === "layer") {
      state.layerStats.add(where.stat);
      continue;
    }
    const key = where.kind === "chart" ? where.key : `other:${where.family}`;
    if (!groups.has(key)) groups.set(key, { where, names: [] });
    groups.get(key).names.push(item.name);
  }
  if (!state.layerStats.has(state.heatmapStat) && state.layerStats.size) {
    state.heatmapStat = [...state.layerStats].sort()[0];
  }
  state.layerStats.add(state.heatmapStat);
  updateStatOptions(state);
  document.getElementById("heatmap-stat").addEventListener("change", (event) => {
    state.heatmapStat = event.target.value;
    refreshHeatmap(state);
  });

  const names = [...groups.values()].flatMap((group) => group.names);
  const heatmapLoad = refreshHeatmap(state);
  let reads;
  try {
    reads = await Promise.all(names.map((name) => api.points(state.runId, name, POINTS)));
  } catch (error) {
    showError(`Could not load the series: ${error.message}`);
    return;
  }
  // The smallest cursor any read saw: the stream resends from there and the charts drop steps
  // they already hold, so no point is missed and none is drawn twice.
  let cursor = reads.length ? Infinity : 0;
  const byName = new Map();
  for (const read of reads) {
    byName.set(read.name, read);
    if (typeof read.cursor === "number" && read.cursor < cursor) cursor = read.cursor;
  }
  if (!Number.isFinite(cursor)) cursor = 0;

  const draws = [];
  for (const chart of CHARTS) {
    const group = groups.get(chart.key);
    const series = group ? group.names.map((name) => byName.get(name)).filter(Boolean) : [];
    draws.push(state.charts.get(chart.key).init(series));
  }
  for (const group of groups.values()) {
    if (group.where.kind !== "other") continue;
    const series = group.names.map((name) => byName.get(name)).filter(Boolean);
    draws.push(otherChart(state, group.where.family).init(series));
  }
  await Promise.all([...draws, heatmapLoad]);
  clearError();
  document.body.dataset.loaded = "true";

  if (FINAL_STATUSES.has(run.status)) {
    setLiveState("ended");
    return;
  }
  state.live = openLive(state.runId, cursor, {
    onPoints: (data) => onPoints(state, data),
    onStatus: (status) => onStatus(state, status),
    onState: (text) => setLiveState(text === "closed" && !state.live ? "ended" : text),
  });
}

load();
