// The health findings on the rest of the run page: marks at their steps on the overview charts
// and the LR panel, the rule's bands on the charts that shade them, and what clicking a finding
// does (pick its layer, zoom to its step, or show the trick panel it is about).

import { stepMarks } from "./findings.js";
import { FINDING_PANELS } from "./run-cards.js";
import { selectLayer, setRatioBand } from "./run-layers.js";

const ZOOM_SHARE = 0.05; // a finding's step is shown with this share of the run on each side
const ZOOM_MIN_HALF = 10; // ... but at least this many steps on each side

/** Trick panels that show what a finding without a layer or step is about. */
const PANEL_OF_CHECK = { "clipping-always": "clipped", "ema-worse": "acc", "ema-horizon": "emadecay", "drop-path-order": "droppath" };

/**
 * A health report was rendered: mark the findings that name a step on the overview charts and
 * the LR panel, and shade the update-ratio band the rule used.
 */
export function markFindings(state, findings, report) {
  state.findings = findings;
  const marks = stepMarks(findings);
  for (const chart of state.charts.values()) chart.setFindings(marks);
  for (const key of FINDING_PANELS) {
    if (state.panels.has(key)) state.panels.get(key).setFindings(marks);
  }
  const bands = report && report.bands && typeof report.bands === "object" ? report.bands : {};
  setRatioBand(state, bands.update_ratio);
}

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
export function healthAction(state, finding) {
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
