// The run page's per-layer section: the layer x step heatmap of a chosen statistic, the layer
// picker and the chosen layer's line charts (the update ratio over the health rule's band), and
// its histograms over time.

import { api } from "./api.js";
import { LineChart, plotlyReady, ratioBandShapes } from "./charts.js";
import { el, showError } from "./dom.js";
import { windowReader } from "./run-cards.js";
import { markFirstChart } from "./run-hooks.js";
import { LAYER_CHARTS, POINTS, layerChartKey } from "./run-series.js";

const HEATMAP_POINTS = 400; // step columns of the heatmap
const HEATMAP_REFRESH_MS = 2000; // live heatmap re-fetch at most this often
const HIST_POINTS = 200; // histograms (steps) in the histogram-over-time view
export const HIST_REFRESH_MS = 5000;

// grad_norm/total and grad_norm/total_preclip are the global norm, not layers "total…"; a server
// that takes every grad_norm/<name> series as a layer would give them a row.
const GLOBAL_ROWS = new Set(["total", "total_preclip"]);

export function updateStatOptions(state) {
  const select = document.getElementById("heatmap-stat");
  const stats = [...state.layerStats].sort();
  if (select.options.length === stats.length) return;
  select.replaceChildren(...stats.map((stat) => el("option", { text: stat, attrs: { value: stat } })));
  select.value = state.heatmapStat;
}

/**
 * Note a per-layer series (or a histogram name); true when the layer gains a statistic. The
 * heatmap's statistic list grows with it.
 */
export function noteLayerSeries(state, stat, layer, name) {
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

export async function refreshHeatmap(state) {
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
export function scheduleHeatmap(state) {
  if (state.heatmapTimer) return;
  const wait = Math.max(0, state.heatmapLastFetch + HEATMAP_REFRESH_MS - Date.now());
  state.heatmapTimer = window.setTimeout(async () => {
    await refreshHeatmap(state);
    state.heatmapTimer = null;
  }, wait);
}

/** Layers with per-layer series, in model order (declared first, then any others). */
export function pickableLayers(state) {
  const declared = [...state.layers].filter((layer) => state.layerSeries.has(layer));
  const rest = [...state.layerSeries.keys()].filter((layer) => !state.layers.has(layer)).sort();
  return [...declared, ...rest];
}

export function updateLayerOptions(state) {
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

function bandText(value) {
  return Number(value).toExponential(0).replace("e+", "e");
}

/**
 * The update-ratio band the health rule judges by ({low, high, typical} from the health
 * report's `bands`): shaded on the ratio chart and named in its heading. Until a report says,
 * no band is drawn (the page has no band of its own to disagree with the rule).
 */
export function setRatioBand(state, band) {
  const valid = band && Number.isFinite(band.low) && Number.isFinite(band.high) ? band : null;
  if (JSON.stringify(valid) === JSON.stringify(state.ratioBand)) return;
  state.ratioBand = valid;
  const label = document.getElementById("ratio-band-label");
  const parts = valid ? [`band ${bandText(valid.low)}\u2026${bandText(valid.high)}`] : [];
  if (valid && Number.isFinite(valid.typical)) parts.push(`line ${bandText(valid.typical)}`);
  label.textContent = parts.length ? `(${parts.join(", ")}: the health check's)` : "";
  const chart = state.layerCharts.get("ratio");
  if (chart) chart.setShapes(ratioBandShapes(valid));
}

/** Draw the line charts of one layer: fresh charts, one read per statistic of that layer. */
export function selectLayer(state, layer) {
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
      shapes: spec.band ? ratioBandShapes(state.ratioBand) : undefined,
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

export async function refreshHistogram(state) {
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
