// The run page: Health and the overview charts first (findings marked at their steps), then the
// run's config, setup, tricks and system folded into one-line summaries, one panel per trick
// (panels.js; shown when its series exist), the per-layer heatmap, layer picker and histograms;
// live over SSE, zoom re-reads. This module loads the run and wires the parts together; the
// `trickscope report` file runs it too, over its inline data (report-api.js stands in for api.js).

import { api, toNumber } from "./api.js";
import { HeatmapChart, HistogramChart, LineChart, loadPlotly } from "./charts.js";
import { clearError, showError } from "./dom.js";
import { HealthPanel } from "./health.js";
import { openLive } from "./live.js";
import { hasEnded } from "./liveness.js";
import { EPS_DOMINANCE_TOP } from "./panels.js";
import { drawPreview } from "./preview.js";
import { chartFor, windowReader } from "./run-cards.js";
import { showSetup } from "./run-facts.js";
import { healthAction, markFindings } from "./run-findings.js";
import { renderHeader } from "./run-header.js";
import { hooks, markFirstChart, markShown, nextFrame } from "./run-hooks.js";
import {
  HIST_REFRESH_MS,
  noteLayerSeries,
  pickableLayers,
  refreshHeatmap,
  refreshHistogram,
  selectLayer,
  updateLayerOptions,
  updateStatOptions,
} from "./run-layers.js";
import { onPoints, onStatus, setLiveState } from "./run-live.js";
import { OVERVIEW, POINTS, classify } from "./run-series.js";

function runIdFromPath() {
  const parts = window.location.pathname.split("/").filter(Boolean);
  const at = parts.indexOf("runs");
  return decodeURIComponent(at >= 0 && parts[at + 1] ? parts[at + 1] : parts[parts.length - 1]);
}

async function load() {
  const state = {
    runId: document.body.dataset.runId || runIdFromPath(),
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
    ratioBand: null, // the health rule's update-ratio band, once a report has said it
  };
  hooks.state = state;
  // The findings are read at once, next to the run; they are drawn once the page has its layers,
  // panels and charts (which rows can pick a layer, zoom a chart or show a panel depends on it).
  let runKnown;
  state.health = new HealthPanel(document.getElementById("health"), state.runId, {
    actionOf: (finding) => healthAction(state, finding),
    onReport: (findings, report) => markFindings(state, findings, report),
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
    const where = classify(item.name, state.layers);
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

  if (hasEnded(run) || api.offline) {
    // A report file has no server to listen to: it shows the run as it was when written.
    setLiveState(api.offline ? "offline copy" : "ended");
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
    onHealthUnchanged: () => state.health.unchanged(),
    onState: (text) => {
      setLiveState(text === "closed" && !state.live ? "ended" : text);
      if (text === "live") state.health.resume();
    },
  });
}

load();
