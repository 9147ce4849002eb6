// The run page: header with trick summary, Health findings beside the Setup card, overview charts
// (findings marked at their steps), one panel per trick (panels.js; shown when its series exist),
// per-layer heatmap + layer picker + histograms, live over SSE, zoom re-reads.

import { FINAL_STATUSES, api, formatTime, toNumber } from "./api.js";
import {
  HeatmapChart,
  HistogramChart,
  LineChart,
  loadPlotly,
  plotlyReady,
  ratioBandShapes,
  spanShape,
} from "./charts.js";
import { clipShare } from "./clipping.js";
import { clearError, el, setStatusBadge, showError } from "./dom.js";
import { stepMarks } from "./findings.js";
import { EPS_DOMINANCE_TOP, PANELS, clippedSeries } from "./panels.js";
import { drawPreview } from "./preview.js";
import { HealthPanel } from "./health.js";
import { openLive } from "./live.js";
import { describeStatus, hasEnded } from "./liveness.js";
import { renderSetup } from "./setup.js";

const POINTS = 2000; // per-series budget of a read; the server downsamples to it
const HEATMAP_POINTS = 400; // step columns of the heatmap
const HEATMAP_REFRESH_MS = 2000; // live heatmap re-fetch at most this often
const HIST_POINTS = 200; // histograms (steps) in the histogram-over-time view
const HIST_REFRESH_MS = 5000;
const ZOOM_SHARE = 0.05; // a finding's step is shown with this share of the run on each side
const ZOOM_MIN_HALF = 10; // ... but at least this many steps on each side


// Test and benchmark hooks (read-only observations plus a simulated network drop).
// firstShownAt: the first chart on screen (an SVG preview or Plotly); firstChartAt: the first
// Plotly (interactive) chart; loadedAt: every initial chart drawn. Milliseconds from navigation.
const hooks = { firstShownAt: null, firstChartAt: null, loadedAt: null };
window.__trickscope = hooks;

function markShown() {
  if (hooks.firstShownAt === null) {
    hooks.firstShownAt = performance.now();
    performance.mark("trickscope:first-shown");
  }
}

function nextFrame() {
  return new Promise((resolve) => {
    requestAnimationFrame(() => setTimeout(resolve, 0));
  });
}

function markFirstChart() {
  markShown();
  if (hooks.firstChartAt === null) {
    hooks.firstChartAt = performance.now();
    performance.mark("trickscope:first-chart");
  }
}

const PRECLIP = "grad_norm/total_preclip";

/**
 * The fixed overview charts (in the page's HTML). The global norm is measured at
 * optimizer.step(), after any clipping; the agent also measures it before clipping (a second,
 * dashed trace), so a clipped run shows both what the optimizer got and what backward made.
 */
const OVERVIEW = [
  { key: "loss", match: (name) => name.startsWith("loss"), ytitle: "loss" },
  {
    key: "gradnorm",
    match: (name) => name === "grad_norm/total" || name === PRECLIP,
    ytitle: "‖g‖₂",
    labelOf: (name) => ({ [PRECLIP]: "before clipping", "grad_norm/total": "after clipping" })[name] || name,
    styleOf: (name) => ({ line: name === PRECLIP ? { dash: "dash", color: "#9ca3af" } : { color: "#1f77b4" } }),
  },
];


/** Per-layer charts of the layer picker: which statistic goes where. */
const LAYER_CHARTS = [
  // Magnitudes on a log axis; the signed means apart, on a linear one (a log axis drops every
  // negative mean and draws the rest as a comb).
  { key: "grad", id: "chart-layer-grad", logy: true, match: (stat) => /^grad_(norm|max|std)$/.test(stat) },
  { key: "weight", id: "chart-layer-weight", match: (stat) => /^weight_(norm|std)$/.test(stat) },
  { key: "means", id: "chart-layer-means", match: (stat) => stat === "grad_mean" || stat === "weight_mean" },
  { key: "ratio", id: "chart-update-ratio", logy: true, band: true, match: (stat) => stat === "update_ratio" },
  { key: "health", id: "chart-layer-health", match: () => true },
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

/** The declared layer a series name ends with, as {stat, layer}, or null. */
function layerOf(name, state) {
  if (name === "grad_norm/total") return null;
  for (let at = name.indexOf("/"); at > 0; at = name.indexOf("/", at + 1)) {
    const layer = name.slice(at + 1);
    if (state.layers.has(layer)) return { stat: name.slice(0, at), layer };
  }
  return null;
}

/**
 * Where a series goes: {kind: "overview", key} | {kind: "panel", key} | {kind: "layer", stat,
 * layer} | {kind: "other", family}. ε dominance is per layer but has its own trick panel too.
 */
function classify(name, state) {
  for (const chart of OVERVIEW) if (chart.match(name)) return { kind: "overview", key: chart.key };
  if (name.startsWith("opt/eps_dominance/")) return { kind: "panel", key: "epsdom", ...layerOf(name, state) };
  const layer = layerOf(name, state);
  if (layer) return { kind: "layer", ...layer };
  for (const panel of PANELS) if (panel.match(name)) return { kind: "panel", key: panel.key };
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
  entries.sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true })); // rank 2 < rank 10
  for (const [key, value] of entries) {
    table.append(
      el("tr", {}, [el("th", { text: key, attrs: { scope: "row" } }), el("td", { text: valueText(value) })]),
    );
  }
}

const INLINE_ITEMS = 6; // lists and objects up to this many plain entries are shown inline
const NESTED_DEPTH = 4; // deeper settings are shown as JSON

/** A setting for people: numbers to 6 significant digits (0.1 + 0.2 noise dropped). */
function settingText(value) {
  if (typeof value === "number" && Number.isFinite(value) && !Number.isInteger(value)) {
    return String(Number(value.toPrecision(6)));
  }
  return valueText(value);
}

function isPlain(value) {
  return value === null || typeof value !== "object";
}

/**
 * A trick setting's value as nodes: plain values as text, short plain lists inline, objects and
 * longer lists as a nested list, folded behind a <details> when long (an optimizer's param
 * groups, the parameter names of a group).
 */
function settingNodes(value, depth = 0) {
  if (isPlain(value)) return [el("span", { text: settingText(value) })];
  const entries = Array.isArray(value) ? value.map((item, i) => [String(i), item]) : Object.entries(value);
  if (depth >= NESTED_DEPTH) return [el("span", { text: valueText(value) })];
  const plain = entries.every(([, item]) => isPlain(item));
  if (Array.isArray(value) && plain && value.length <= INLINE_ITEMS) {
    return [el("span", { text: `[${value.map(settingText).join(", ")}]` })];
  }
  const items = entries.map(([key, item]) =>
    Array.isArray(value)
      ? el("li", {}, settingNodes(item, depth + 1))
      : el("li", {}, [el("span", { className: "k", text: key }), " ", ...settingNodes(item, depth + 1)]),
  );
  const list = el("ul", { className: "nested" }, items);
  if (plain && entries.length <= INLINE_ITEMS) return [list];
  const noun = Array.isArray(value) ? "item" : "key";
  const label = `${entries.length} ${noun}${entries.length === 1 ? "" : "s"}`;
  return [el("details", { className: "setting" }, [el("summary", { text: label }), list])];
}

/** The run's trick configuration (config.tricks) as one card per trick, all text. */
function renderTricks(tricks) {
  const box = document.getElementById("trick-summary");
  box.replaceChildren();
  const entries = tricks && typeof tricks === "object" ? Object.entries(tricks) : [];
  if (!entries.length) {
    box.append(el("p", { className: "muted", text: "no trick configuration recorded (config.tricks)" }));
    return;
  }
  entries.sort(([a], [b]) => a.localeCompare(b));
  for (const [trick, settings] of entries) {
    const items = [];
    if (settings && typeof settings === "object" && !Array.isArray(settings)) {
      for (const [key, value] of Object.entries(settings)) {
        items.push(el("li", {}, [el("span", { className: "k", text: key }), " ", ...settingNodes(value)]));
      }
    } else {
      items.push(el("li", {}, settingNodes(settings)));
    }
    box.append(el("div", { className: "trick", dataset: { trick } }, [el("h3", { text: trick }), el("ul", {}, items)]));
  }
}

/** config.tricks.schedule.warmup_steps (or any warmup_steps under config.tricks), if positive. */
function warmupSteps(config) {
  const tricks = config && config.tricks;
  if (!tricks || typeof tricks !== "object") return null;
  const direct = tricks.schedule && tricks.schedule.warmup_steps;
  if (typeof direct === "number" && direct > 0) return direct;
  for (const value of Object.values(tricks)) {
    if (value && typeof value === "object" && typeof value.warmup_steps === "number" && value.warmup_steps > 0) {
      return value.warmup_steps;
    }
  }
  return null;
}

function renderHeader(run) {
  document.title = `${run.name || run.id} · trickscope`;
  document.getElementById("run-name").textContent = run.name || run.id;
  showStatus(run);
  document.getElementById("run-project").textContent = run.project || "";
  document.getElementById("run-id").textContent = run.id;
  document.getElementById("run-started").textContent = formatTime(run.started_at || run.created_at);
  document.getElementById("run-ended").textContent = run.ended_at ? formatTime(run.ended_at) : "\u2014";
  const tags = document.getElementById("run-tags");
  tags.replaceChildren(...(run.tags || []).map((tag) => el("span", { className: "tag", text: tag })));
  if (!(run.tags || []).length) tags.textContent = "\u2014";
  // config.tricks has its own summary next to the table; as one JSON cell it would only repeat it.
  const config = run.config && typeof run.config === "object" ? { ...run.config } : run.config;
  if (config && typeof config === "object" && typeof config.tricks === "object") delete config.tricks;
  fillTable(document.getElementById("config-table"), config, "no config recorded");
  fillTable(document.getElementById("system-table"), { ...run.system, ...rankRows(run.ranks) }, "no system info recorded");
  renderTricks(run.config && run.config.tricks);
}

/** A distributed run's ranks as system-table rows: "rank 2" → "node-b · pid 4242 · local rank 0". */
function rankRows(ranks) {
  const rows = {};
  for (const [rank, info] of Object.entries(ranks || {})) {
    const parts = [info.hostname, info.pid !== undefined ? `pid ${info.pid}` : null];
    if (info.local_rank !== undefined) parts.push(`local rank ${info.local_rank}`);
    if (info.device) parts.push(info.device);
    rows[`rank ${rank}`] = parts.filter((part) => part !== null && part !== undefined).join(" · ");
  }
  return rows;
}

function slug(text) {
  return text.replace(/[^A-Za-z0-9_-]/g, "_");
}

function windowReader(state) {
  return (name, start, end) => api.points(state.runId, name, POINTS, start, end);
}

/** A card with a line chart, appended to `parent`; returns the chart. */
function card(state, parent, { id, title, ytitle, mode, logy, shapes, style, note, onDraw }) {
  const div = el("div", { className: "chart", id });
  const logButton = el("button", { className: "small", text: "log y", attrs: { type: "button" } });
  const noteNode = el("p", { className: "note muted small-text" });
  const section = el("section", { className: "card", id: `card-${id.slice("chart-".length)}` }, [
    el("div", { className: "card-head" }, [el("h2", { text: title }), logButton]),
    noteNode,
    div,
  ]);
  parent.append(section);
  const chart = new LineChart(div, {
    ytitle,
    mode,
    logy,
    shapes,
    styleOf: style ? (name) => style(name, state) : undefined,
    fetchWindow: windowReader(state),
    onUpdate: (drawn) => {
      markFirstChart();
      if (note) noteNode.textContent = note(drawn);
      if (onDraw) onDraw(drawn);
    },
  });
  logButton.addEventListener("click", () => chart.toggleLogY());
  return chart;
}

/** The panel of a trick (or of the ranks), created, and its section shown, on first need. */
function panelChart(state, key) {
  if (state.panels.has(key)) return state.panels.get(key);
  const panel = PANELS.find((item) => item.key === key);
  const section = panel.section || "tricks";
  const container = document.getElementById(`${section}-panels`);
  const warmup = panel.warmup ? warmupSteps(state.run && state.run.config) : null;
  const chart = card(state, container, {
    id: `chart-${key}`,
    title: panel.title,
    ytitle: panel.ytitle,
    mode: panel.mode,
    logy: panel.logy,
    style: panel.style,
    note: panel.note || (warmup ? () => `warmup: steps 0…${warmup}` : undefined),
    shapes: warmup ? [spanShape(0, warmup)] : undefined,
    onDraw: (drawn) => panelDrawn(state, key, drawn),
  });
  if (FINDING_PANELS.has(key)) chart.setFindings(stepMarks(state.findings));
  // Keep the cards in PANELS order whatever order their series arrive in.
  const order = PANELS.map((item) => item.key);
  const cards = [...container.children];
  cards.sort((a, b) => order.indexOf(a.id.slice(5)) - order.indexOf(b.id.slice(5)));
  container.replaceChildren(...cards);
  document.getElementById(`${section}-section`).hidden = false;
  state.panels.set(key, chart);
  return chart;
}

/** A card for a family of "other" metrics, created on first need. */
function otherChart(state, family) {
  if (state.other.has(family)) return state.other.get(family);
  document.getElementById("other-section").hidden = false;
  const chart = card(state, document.getElementById("other-charts"), {
    id: `chart-other-${slug(family)}`,
    title: family,
    ytitle: family,
    mode: "lines+markers",
  });
  state.other.set(family, chart);
  return chart;
}

function chartFor(where, state) {
  if (where.kind === "overview") return state.charts.get(where.key);
  if (where.kind === "panel") return panelChart(state, where.key);
  if (where.kind === "other") return otherChart(state, where.family);
  return null;
}

// ---- per-layer section ---------------------------------------------------------------------

function updateStatOptions(state) {
  const select = document.getElementById("heatmap-stat");
  const stats = [...state.layerStats].sort();
  if (select.options.length === stats.length) return;
  select.replaceChildren(...stats.map((stat) => el("option", { text: stat, attrs: { value: stat } })));
  select.value = state.heatmapStat;
}

// grad_norm/total and grad_norm/total_preclip are the global norm, not layers "total…"; a server
// that takes every grad_norm/<name> series as a layer would give them a row.
const GLOBAL_ROWS = new Set(["total", "total_preclip"]);

/** The heatmap without the global norm's rows (unless the model declared such a layer). */
function withoutGlobalRows(state, heatmap) {
  const declared = new Set((state.run && state.run.layers) || []);
  const layers = heatmap.layers || [];
  const keep = layers.map((layer) => !GLOBAL_ROWS.has(layer) || declared.has(layer));
  if (keep.every(Boolean)) return heatmap;
  return {
    ...heatmap,
    layers: layers.filter((_, i) => keep[i]),
    z: (heatmap.z || []).filter((_, i) => keep[i]),
  };
}

async function refreshHeatmap(state) {
  state.heatmapLastFetch = Date.now();
  try {
    const read = await api.heatmap(state.runId, state.heatmapStat, HEATMAP_POINTS);
    const heatmap = withoutGlobalRows(state, read);
    for (const layer of heatmap.layers || []) state.layers.add(layer);
    await plotlyReady();
    await state.heatmap.render(heatmap);
    markFirstChart();
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

/** Layers with per-layer series, in model order (declared first, then any others). */
function pickableLayers(state) {
  const declared = [...state.layers].filter((layer) => state.layerSeries.has(layer));
  const rest = [...state.layerSeries.keys()].filter((layer) => !state.layers.has(layer)).sort();
  return [...declared, ...rest];
}

function updateLayerOptions(state) {
  const select = document.getElementById("layer-select");
  const needle = document.getElementById("layer-filter").value.trim().toLowerCase();
  const all = pickableLayers(state);
  const shown = needle ? all.filter((layer) => layer.toLowerCase().includes(needle)) : all.slice();
  const matches = shown.length;
  // The selected layer stays listed (and selected) even when the filter hides it.
  if (state.selectedLayer && !shown.includes(state.selectedLayer)) shown.unshift(state.selectedLayer);
  const current = [...select.options].map((option) => option.value);
  if (current.length !== shown.length || current.some((value, i) => value !== shown[i])) {
    select.replaceChildren(...shown.map((layer) => el("option", { text: layer, attrs: { value: layer } })));
  }
  if (state.selectedLayer) select.value = state.selectedLayer;
  document.getElementById("layer-count").textContent = needle
    ? `${matches} of ${all.length} layers`
    : `${all.length} layers`;
}

function layerChartKey(stat) {
  return LAYER_CHARTS.find((chart) => chart.match(stat)).key;
}

/** Draw the line charts of one layer: fresh charts, one read per statistic of that layer. */
function selectLayer(state, layer) {
  state.selectedLayer = layer;
  document.body.dataset.layer = layer || "";
  updateLayerOptions(state);
  for (const spec of LAYER_CHARTS) {
    const old = state.layerCharts.get(spec.key);
    const div = document.getElementById(spec.id);
    if (old) {
      old.retired = true;
      if (window.Plotly) window.Plotly.purge(div);
    }
    div.dataset.points = "0";
    const chart = new LineChart(div, {
      ytitle: spec.key === "ratio" ? "‖Δw‖/‖w‖" : "value",
      logy: spec.logy,
      shapes: spec.band ? ratioBandShapes() : undefined,
      fetchWindow: windowReader(state),
      mode: "lines",
    });
    state.layerCharts.set(spec.key, chart);
  }
  const stats = layer ? [...(state.layerSeries.get(layer) || [])].sort() : [];
  const byChart = new Map(LAYER_CHARTS.map((spec) => [spec.key, []]));
  for (const stat of stats) byChart.get(layerChartKey(stat)).push(`${stat}/${layer}`);
  for (const [key, names] of byChart) {
    const chart = state.layerCharts.get(key);
    // The reads start now; live points for this layer queue up behind the first draw.
    const reads = Promise.all(names.map((name) => api.points(state.runId, name, POINTS)));
    chart.enqueue(async () => {
      const series = await reads;
      await plotlyReady();
      if (chart.retired) return; // another layer was picked meanwhile
      await chart.draw(series);
    });
  }
  refreshHistogram(state);
}

function histogramName(state) {
  const kind = document.getElementById("hist-kind").value;
  return state.selectedLayer ? `${kind}/${state.selectedLayer}` : null;
}

async function refreshHistogram(state) {
  const name = histogramName(state);
  state.histLastFetch = Date.now();
  try {
    await plotlyReady();
    // Only names the run has: a speculative 404 would be noise in the console.
    const hist =
      name && state.histNames.has(name)
        ? await api.histograms(state.runId, name, HIST_POINTS)
        : { name: name || "", step: [], lo: [], hi: [], counts: [], nonfinite: [] };
    if (name !== histogramName(state)) return; // the user moved on meanwhile
    await state.hist.render(hist);
  } catch (error) {
    showError(`Could not load the histograms of ${name}: ${error.message}`);
  }
}

// ---- setup card, clipping note, findings on the charts ---------------------------------------

/** Trick panels that mark the findings' steps too (beside the overview charts). */
const FINDING_PANELS = new Set(["lr"]);

/** The Setup card with what the measured series say now (the document itself never changes). */
function showSetup(state) {
  renderSetup(document.getElementById("setup"), state.run && state.run.setup, state.setupFacts);
}

/** The gradient-norm card's note: how many of the steps drawn were clipped, when measured. */
function showGradnormNote(state) {
  const clip = state.setupFacts.clip;
  const note = document.getElementById("gradnorm-note");
  note.textContent = clip
    ? `clipped on ${(100 * clip.share).toFixed(0)}% of steps (${clip.clipped} of ${clip.count} drawn)`
    : "";
}

/** A trick panel drew: the facts the Setup card and the gradient-norm note take from it. */
function panelDrawn(state, key, chart) {
  if (key === "clipped") {
    state.setupFacts.clip = clipShare(clippedSeries(chart));
    showGradnormNote(state);
    showSetup(state);
  } else if (key === "accum") {
    const stored = chart.store.get("accum/backward_passes");
    if (!stored || !stored.v.length) return;
    state.setupFacts.backwardPasses = toNumber(stored.v[stored.v.length - 1]);
    showSetup(state);
  }
}

/** Mark the findings that name a step on the overview charts and the LR panel. */
function markFindings(state, findings) {
  state.findings = findings;
  const marks = stepMarks(findings);
  for (const chart of state.charts.values()) chart.setFindings(marks);
  for (const key of FINDING_PANELS) {
    if (state.panels.has(key)) state.panels.get(key).setFindings(marks);
  }
}

// ---- health findings -----------------------------------------------------------------------

/** Trick panels that show what a finding without a layer or step is about. */
const PANEL_OF_CHECK = { "clipping-always": "clipped", "ema-worse": "acc", "ema-horizon": "emadecay", "drop-path-order": "droppath" };

/**
 * Zoom a line chart's x axis to a window around `step` (y rescaled); the chart's relayout
 * handler then re-reads the window at full resolution. Runs in the chart's queue, so a chart
 * still drawing its first read is zoomed once it has drawn.
 */
function zoomAround(chart, step) {
  return chart.enqueue(async () => {
    if (!chart.started || chart.retired || !chart.traceIndex.size) return;
    let lo = Infinity;
    let hi = -Infinity;
    for (const stored of chart.store.values()) {
      if (!stored.x.length) continue;
      lo = Math.min(lo, stored.x[0]);
      hi = Math.max(hi, stored.x[stored.x.length - 1]);
    }
    const span = Number.isFinite(lo) ? Math.max(hi, step) - Math.min(lo, step) : 0;
    const half = Math.max(ZOOM_MIN_HALF, Math.ceil(span * ZOOM_SHARE));
    await window.Plotly.relayout(chart.div, {
      "xaxis.range": [Math.max(0, step - half), step + half],
      "yaxis.autorange": true,
    });
  });
}

function scrollTo(node) {
  node.scrollIntoView({ behavior: "smooth", block: "start" });
}

/** A finding that names a layer the page knows: pick it, zoom its charts to the step, go there. */
function showFindingLayer(state, finding) {
  if (finding.layer !== state.selectedLayer) selectLayer(state, finding.layer);
  if (typeof finding.step === "number") {
    for (const chart of state.layerCharts.values()) zoomAround(chart, finding.step);
  }
  scrollTo(document.getElementById("layer-picker"));
  document.getElementById("layer-select").focus({ preventScroll: true });
}

/** A finding that names a step (and no known layer): zoom the overview charts around it. */
function showFindingStep(state, finding) {
  for (const chart of state.charts.values()) zoomAround(chart, finding.step);
  scrollTo(document.getElementById("chart-loss").closest(".card"));
}

/** What clicking a finding does, or null: {kind, label, run(finding)}. */
function healthAction(state, finding) {
  const layer = typeof finding.layer === "string" ? finding.layer : "";
  if (layer && (state.layers.has(layer) || state.layerSeries.has(layer))) {
    return { kind: "layer", label: "show layer", run: (item) => showFindingLayer(state, item) };
  }
  if (typeof finding.step === "number" && Number.isInteger(finding.step)) {
    return { kind: "step", label: "zoom to step", run: (item) => showFindingStep(state, item) };
  }
  const key = PANEL_OF_CHECK[finding.check];
  if (key && state.panels.has(key)) {
    return { kind: "panel", label: "show chart", run: () => scrollTo(document.getElementById(`card-${key}`)) };
  }
  return null;
}

// ---- live ----------------------------------------------------------------------------------

function setLiveState(text) {
  const node = document.getElementById("live-state");
  node.textContent = text;
  node.dataset.state = text;
}

function showStatus(run) {
  const badge = document.getElementById("run-status");
  setStatusBadge(badge, run.status);
  describeStatus(badge, run);
}

async function onStatus(state, status) {
  if (status === "deleted") {
    // The stream ends for good; reconnecting would only meet a 404.
    if (state.live) state.live.close();
    state.live = null;
    setLiveState("ended");
    state.health.stop();
    showError("This run was deleted.");
    return;
  }
  // Points events repeat the status; only a change is news. The latest one wins a race.
  if (status === state.streamStatus) return;
  state.streamStatus = status;
  let run = { ...state.run, status };
  if (FINAL_STATUSES.has(status)) {
    // The end time tells a run that ended (crashed too, when its process said so) from one that
    // only went silent and may still be heard from: a silent run keeps its stream open.
    try {
      run = await api.run(state.runId);
    } catch {
      // keep what the stream said
    }
    if (state.streamStatus !== status || run.status !== status) return; // changed meanwhile
  }
  state.run = run;
  showStatus(run);
  document.getElementById("run-ended").textContent = run.ended_at ? formatTime(run.ended_at) : "\u2014";
  if (hasEnded(run) && state.live) {
    state.live.close();
    state.live = null;
    setLiveState("ended");
    scheduleHeatmap(state);
    if (state.histNames.size) refreshHistogram(state);
    state.health.final(); // the final word: every point is in, and some checks wait for the end
  }
}

function noteLayerSeries(state, stat, layer, name) {
  if (stat.endsWith("_hist")) {
    state.histNames.add(name);
    return false;
  }
  if (!state.layerSeries.has(layer)) state.layerSeries.set(layer, new Set());
  const stats = state.layerSeries.get(layer);
  const isNew = !stats.has(stat);
  stats.add(stat);
  if (!state.layerStats.has(stat) && !stat.includes("/")) {
    state.layerStats.add(stat);
    updateStatOptions(state);
  }
  return isNew;
}

function onPoints(state, data) {
  const series = (data && data.series) || {};
  let newLayers = false;
  for (const [name, columns] of Object.entries(series)) {
    const steps = columns.step || [];
    const values = columns.value || [];
    const where = classify(name, state);
    if (where.layer) {
      const known = state.layerSeries.has(where.layer);
      const isNew = noteLayerSeries(state, where.stat, where.layer, name);
      newLayers = newLayers || !known;
      if (where.layer === state.selectedLayer) {
        if (isNew) {
          selectLayer(state, where.layer); // a new statistic of the layer: redraw its charts
        } else {
          state.layerCharts.get(layerChartKey(where.stat)).extend(name, steps, values);
        }
      }
      if (where.stat === state.heatmapStat) scheduleHeatmap(state);
      if (where.kind === "layer") continue;
      if (!state.epsShown.has(name)) {
        if (state.epsShown.size >= EPS_DOMINANCE_TOP) continue;
        state.epsShown.add(name);
      }
    }
    chartFor(where, state).extend(name, steps, values);
  }
  if (newLayers) {
    updateLayerOptions(state);
    if (!state.selectedLayer) selectLayer(state, pickableLayers(state)[0]);
  }
  if (Object.keys(series).length) state.health.schedule();
  if (data && data.status) onStatus(state, data.status);
}

// ---- load ----------------------------------------------------------------------------------

async function load() {
  const state = {
    runId: runIdFromPath(),
    run: null,
    layers: new Set(),
    layerStats: new Set(),
    layerSeries: new Map(),
    histNames: new Set(),
    epsShown: new Set(),
    charts: new Map(),
    panels: new Map(),
    other: new Map(),
    layerCharts: new Map(),
    selectedLayer: null,
    blockColour: new Map(),
    rankColour: new Map(),
    heatmap: new HeatmapChart(document.getElementById("chart-heatmap")),
    hist: new HistogramChart(document.getElementById("chart-hist")),
    heatmapStat: "grad_norm",
    heatmapLastFetch: 0,
    heatmapTimer: null,
    histLastFetch: 0,
    live: null,
    health: null,
    findings: [],
    setupFacts: { backwardPasses: null, clip: null },
  };
  hooks.state = state;
  // The findings are read at once, next to the run; they are drawn once the page has its layers,
  // panels and charts (which rows can pick a layer, zoom a chart or show a panel depends on it).
  let runKnown;
  state.health = new HealthPanel(document.getElementById("health"), state.runId, {
    actionOf: (finding) => healthAction(state, finding),
    onReport: (findings) => markFindings(state, findings),
    canFetch: () => !state.live || document.getElementById("live-state").dataset.state === "live",
    ready: new Promise((resolve) => {
      runKnown = resolve;
    }),
  });
  state.health.refresh();
  hooks.dropLive = () => state.live && state.live.drop();
  for (const chart of OVERVIEW) {
    const div = document.getElementById(`chart-${chart.key}`);
    state.charts.set(
      chart.key,
      new LineChart(div, {
        ytitle: chart.ytitle,
        labelOf: chart.labelOf,
        styleOf: chart.styleOf,
        fetchWindow: windowReader(state),
        onUpdate: markFirstChart,
      }),
    );
  }
  for (const button of document.querySelectorAll("button[data-logy]")) {
    button.addEventListener("click", () => state.charts.get(button.dataset.logy).toggleLogY());
  }
  for (const button of document.querySelectorAll("button[data-layer-logy]")) {
    button.addEventListener("click", () => state.layerCharts.get(button.dataset.layerLogy).toggleLogY());
  }

  let run;
  let seriesList;
  let histNames;
  try {
    [run, { series: seriesList }, { names: histNames }] = await Promise.all([
      api.run(state.runId),
      api.series(state.runId),
      api.histogramNames(state.runId),
    ]);
  } catch (error) {
    document.getElementById("run-name").textContent = "Run not available";
    showError(error.status === 404 ? `No run with id ${state.runId}.` : error.message);
    state.health.stop();
    document.getElementById("health").hidden = true;
    runKnown();
    return;
  }
  state.run = run;
  state.streamStatus = run.status;
  for (const name of histNames || []) state.histNames.add(name);
  renderHeader(run);
  const passes = (seriesList || []).find((item) => item.name === "accum/backward_passes");
  if (passes) state.setupFacts.backwardPasses = toNumber(passes.last_value);
  showSetup(state);
  for (const layer of run.layers || []) state.layers.add(layer);

  // Group the series by chart; per-layer ones feed the heatmap and the layer picker.
  const groups = new Map();
  const epsCandidates = [];
  for (const item of seriesList || []) {
    const where = classify(item.name, state);
    if (where.layer) noteLayerSeries(state, where.stat, where.layer, item.name);
    if (where.kind === "layer") continue;
    if (where.key === "epsdom") {
      epsCandidates.push(item);
      continue;
    }
    const key = where.kind === "other" ? `other:${where.family}` : `${where.kind}:${where.key}`;
    if (!groups.has(key)) groups.set(key, { where, names: [] });
    groups.get(key).names.push(item.name);
  }
  if (epsCandidates.length) {
    // ε dominance exists per layer: the panel shows the layers where it is highest.
    epsCandidates.sort((a, b) => (toNumber(b.last_value) || 0) - (toNumber(a.last_value) || 0));
    const top = epsCandidates.slice(0, EPS_DOMINANCE_TOP).map((item) => item.name);
    for (const name of top) state.epsShown.add(name);
    groups.set("panel:epsdom", { where: { kind: "panel", key: "epsdom" }, names: top });
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
    runKnown();
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

  const overviewSeries = (key) => {
    const group = groups.get(`overview:${key}`);
    return group ? group.names.map((name) => byName.get(name)).filter(Boolean) : [];
  };
  if (!window.Plotly) {
    // Plotly has not run yet: show the overview's points as SVG first, then let it run.
    for (const chart of OVERVIEW) {
      const div = document.getElementById(`chart-${chart.key}`);
      if (drawPreview(div, overviewSeries(chart.key))) markShown();
    }
    await nextFrame(); // the previews are painted before Plotly's parse takes the thread
  }

  try {
    await loadPlotly();
  } catch (error) {
    showError(error.message);
    runKnown();
    return;
  }
  const draws = [];
  for (const chart of OVERVIEW) {
    draws.push(state.charts.get(chart.key).init(overviewSeries(chart.key)));
  }
  for (const group of groups.values()) {
    if (group.where.kind === "overview") continue;
    const series = group.names.map((name) => byName.get(name)).filter(Boolean);
    draws.push(chartFor(group.where, state).init(series));
  }

  // The layer picker: a filter box narrowing a select of the layers in model order.
  document.getElementById("layer-filter").addEventListener("input", () => updateLayerOptions(state));
  document.getElementById("layer-select").addEventListener("change", (event) => {
    selectLayer(state, event.target.value);
  });
  document.getElementById("hist-kind").addEventListener("change", () => refreshHistogram(state));
  const first = pickableLayers(state)[0] || null;
  selectLayer(state, first);
  // Layers, panels and charts exist now (their draws queued): the findings can point at them.
  runKnown();

  await Promise.all([...draws, heatmapLoad]);
  clearError();
  hooks.loadedAt = performance.now();
  document.body.dataset.loaded = "true";

  if (hasEnded(run)) {
    setLiveState("ended");
    return;
  }
  state.live = openLive(state.runId, cursor, {
    onPoints: (data) => {
      onPoints(state, data);
      if (state.histNames.size && Date.now() - state.histLastFetch > HIST_REFRESH_MS) {
        refreshHistogram(state);
      }
    },
    onStatus: (status) => onStatus(state, status),
    onHealth: (report) => state.health.accept(report),
    onState: (text) => {
      setLiveState(text === "closed" && !state.live ? "ended" : text);
      if (text === "live") state.health.resume();
    },
  });
}

load();
