// The layer x step heatmap of one per-layer statistic, on a log (or signed log) colour scale.

import { formatValue, nonFiniteLabel, toNumber } from "./api.js";
import { EMPTY_NOTE, NONFINITE_COLOR, PLOT_CONFIG, plotlyText } from "./chart-base.js";

function rowGeometry(layerCount) {
  // A fixed row height: the chart grows with the model, so 200+ layers stay readable.
  if (layerCount <= 30) return { row: 18, font: 11 };
  if (layerCount <= 100) return { row: 12, font: 9 };
  return { row: 9, font: 8 };
}

// Negative values blue, zero white, positive red: the colours of a signed statistic's map.
const DIVERGING = [
  [0, "#2166ac"],
  [0.5, "#f7f7f7"],
  [1, "#b2182b"],
];

/**
 * The colour scale of a heatmap from the extent of its finite values (`low`/`high`: log10 of the
 * smallest and largest non-zero magnitude; `zero`, `negative`: whether there are such values):
 * log10 of the value where none is negative (a zero, such as a dead layer's norm, takes the
 * bottom); a signed log where some are (a mean): ±(decades above the smallest magnitude, plus
 * one), zero in the middle.
 */
function colourScale({ low, high, zero, negative }) {
  if (!Number.isFinite(low)) low = high = 0;
  if (!negative) {
    if (zero) low -= 1;
    const decades = [];
    for (let k = Math.floor(low); k <= Math.ceil(high); k += 1) decades.push(k);
    return {
      z: (v) => (v > 0 ? Math.log10(v) : low),
      zmin: low,
      zmax: high > low ? high : low + 1,
      tickvals: decades,
      ticktext: decades.map((k) => `1e${k}`),
      colorscale: "Viridis",
      title: "log",
    };
  }
  const base = Math.floor(low);
  const at = (magnitude) => Math.log10(magnitude) - base + 1;
  const top = Math.max(at(10 ** high), 1);
  const tickvals = [0];
  const ticktext = ["0"];
  for (let k = base; k <= Math.ceil(high); k += 1) {
    tickvals.push(at(10 ** k), -at(10 ** k));
    ticktext.push(`1e${k}`, `-1e${k}`);
  }
  return {
    z: (v) => (v === 0 ? 0 : Math.sign(v) * at(Math.abs(v))),
    zmin: -top,
    zmax: top,
    tickvals,
    ticktext,
    colorscale: DIVERGING,
    title: "signed log",
  };
}

/**
 * Build the Plotly traces of a heatmap answer: the value on a log colour scale (a signed one for
 * a statistic with negative values), the real value in the hover, non-finite cells as red
 * markers.
 */
export function heatmapTraces(heatmap) {
  const layers = heatmap.layers || [];
  const steps = heatmap.step || [];
  const rows = heatmap.z || [];
  const labels = layers.map(plotlyText);
  const z = []; // the finite values first, then their colours
  const hover = [];
  const marks = { x: [], y: [], text: [] };
  const extent = { low: Infinity, high: -Infinity, zero: false, negative: false };
  for (let i = 0; i < layers.length; i += 1) {
    const row = rows[i] || [];
    const zRow = new Array(steps.length).fill(null);
    const hRow = new Array(steps.length).fill("no data");
    for (let j = 0; j < steps.length; j += 1) {
      const raw = row[j];
      if (raw === null || raw === undefined) continue;
      const value = toNumber(raw);
      hRow[j] = formatValue(raw);
      const label = nonFiniteLabel(value);
      if (label) {
        marks.x.push(steps[j]);
        marks.y.push(labels[i]);
        marks.text.push(`${label} in ${labels[i]} at step ${steps[j]}`);
        continue;
      }
      zRow[j] = value;
      if (value < 0) extent.negative = true;
      if (value === 0) {
        extent.zero = true;
        continue;
      }
      const log = Math.log10(Math.abs(value));
      if (log < extent.low) extent.low = log;
      if (log > extent.high) extent.high = log;
    }
    z.push(zRow);
    hover.push(hRow);
  }
  const scale = colourScale(extent);
  for (const zRow of z) {
    for (let j = 0; j < zRow.length; j += 1) if (zRow[j] !== null) zRow[j] = scale.z(zRow[j]);
  }
  const stat = plotlyText(heatmap.stat || "value");
  const traces = [
    {
      type: "heatmap",
      x: steps,
      y: labels,
      z,
      customdata: hover,
      colorscale: scale.colorscale,
      zmin: scale.zmin,
      zmax: scale.zmax,
      hoverongaps: false,
      colorbar: {
        title: { text: `${stat} (${scale.title})`, side: "right" },
        tickvals: scale.tickvals,
        ticktext: scale.ticktext,
        thickness: 12,
      },
      hovertemplate: `layer %{y}<br>step %{x}<br>${stat} %{customdata}<extra></extra>`,
    },
  ];
  if (marks.x.length) {
    traces.push({
      type: "scatter",
      mode: "markers",
      name: "non-finite",
      x: marks.x,
      y: marks.y,
      text: marks.text,
      marker: { symbol: "x", size: 8, color: NONFINITE_COLOR },
      hovertemplate: "%{text}<extra></extra>",
      showlegend: false,
    });
  }
  return { traces, labels, cells: layers.length * steps.length, nonfinite: marks.x.length };
}

/** The layer x step heatmap of one per-layer statistic; redraws with Plotly.react (zoom kept). */
export class HeatmapChart {
  constructor(div) {
    this.div = div;
    this.started = false;
  }

  async render(heatmap) {
    const { traces, labels, cells, nonfinite } = heatmapTraces(heatmap);
    const geometry = rowGeometry(labels.length);
    const height = Math.max(260, labels.length * geometry.row + 100);
    const stat = heatmap.stat || "";
    const layout = {
      height,
      margin: { l: 60, r: 16, t: 16, b: 48 },
      uirevision: `heatmap:${stat}`,
      xaxis: { title: { text: "step" }, automargin: true, zeroline: false },
      yaxis: {
        type: "category",
        // Model order from the top down, every layer labelled.
        autorange: "reversed",
        categoryorder: "array",
        categoryarray: labels,
        dtick: 1,
        automargin: true,
        tickfont: { size: geometry.font },
      },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#f4f5f7",
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
    };
    if (!labels.length) {
      layout.annotations = [{ ...EMPTY_NOTE, text: "no per-layer statistics yet" }];
    }
    if (this.started) {
      await window.Plotly.react(this.div, traces, layout, PLOT_CONFIG);
    } else {
      await window.Plotly.newPlot(this.div, traces, layout, PLOT_CONFIG);
      this.started = true;
    }
    this.div.dataset.points = String(cells);
    this.div.dataset.layers = String(labels.length);
    this.div.dataset.steps = String((heatmap.step || []).length);
    this.div.dataset.nonfinite = String(nonfinite);
    this.div.dataset.stat = stat;
  }
}
