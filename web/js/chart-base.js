// What every chart shares: Plotly's config and base layout, literal text for untrusted names, the
// split of a series into a line and its non-finite markers, and the findings' marks at steps.

import { nonFiniteLabel, toNumber } from "./api.js";

export const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
export const NONFINITE_COLOR = "#d62728";
// Where the non-finite markers sit, on a hidden 0..1 axis overlaying the data: the top of the plot.
const MARKER_Y = 0.96;
// Health findings at a step: a vertical line in the severity's colour, and a flag at the very top
// of the plot that carries the hover label (Plotly shapes have none of their own).
const FINDING_Y = 1;
const SEVERITY_COLOR = { error: "#b91c1c", warning: "#b45309", info: "#2563eb" };
const FINDINGS_TRACE = "findings";

/**
 * Plotly renders a few HTML-like tags inside strings (<b>, <a>, <br>...) as SVG text. Names are
 * untrusted and should read literally, so escape them; Plotly turns the entities back into text.
 */
/**
 * The steps a Plotly relayout event zoomed the x axis to, as { start, end } (whole steps, the
 * window's ends rounded outwards), { autorange: true } when it was reset, or null otherwise.
 */
export function zoomedSteps(event) {
  let lo = event["xaxis.range[0]"];
  let hi = event["xaxis.range[1]"];
  if (Array.isArray(event["xaxis.range"])) [lo, hi] = event["xaxis.range"];
  if (lo !== undefined && hi !== undefined) {
    return { start: Math.max(0, Math.floor(Math.min(lo, hi))), end: Math.ceil(Math.max(lo, hi)) };
  }
  return event["xaxis.autorange"] === true ? { autorange: true } : null;
}

export function plotlyText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function baseLayout(title, ytitle) {
  return {
    // The card heading names the chart; a Plotly title is only drawn when asked for.
    title: { text: title ? plotlyText(title) : "", font: { size: 14 }, x: 0.02, xanchor: "left" },
    margin: { l: 56, r: 16, t: title ? 40 : 16, b: 40 },
    height: 320,
    // A constant uirevision keeps the user's zoom and legend choices across updates.
    uirevision: "keep",
    hovermode: "x unified",
    showlegend: true,
    legend: { orientation: "h", x: 0, y: -0.12, yanchor: "top", font: { size: 11 } },
    // No x title: every chart is over the optimizer step, and the hover names it.
    xaxis: { automargin: true, zeroline: false, hoverformat: "d" },
    yaxis: { title: { text: plotlyText(ytitle || "") }, automargin: true, zeroline: false },
    yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
  };
}

export const EMPTY_NOTE = {
  text: "no data yet",
  xref: "paper",
  yref: "paper",
  x: 0.5,
  y: 0.5,
  showarrow: false,
  font: { size: 13, color: "#888" },
};

/**
 * Split a series' points into a drawable line (non-finite -> null, which Plotly shows as a gap)
 * and markers for the non-finite steps, so that they are shown, not hidden.
 */
export function splitPoints(name, steps, values) {
  const ys = new Array(values.length);
  const marks = { x: [], y: [], text: [] };
  for (let i = 0; i < values.length; i += 1) {
    const label = nonFiniteLabel(values[i]);
    if (label) {
      ys[i] = null;
      marks.x.push(steps[i]);
      marks.y.push(MARKER_Y);
      marks.text.push(`${label} in ${plotlyText(name)} at step ${steps[i]}`);
    } else {
      ys[i] = toNumber(values[i]);
    }
  }
  return { x: steps.slice(), y: ys, marks };
}

function severityColor(severity) {
  return SEVERITY_COLOR[severity] || "#6b7280";
}

/** Vertical lines at the findings' steps (`marks`: [{step, severity, text}]). */
export function findingShapes(marks) {
  return marks.map((mark) => ({
    type: "line",
    xref: "x",
    x0: mark.step,
    x1: mark.step,
    yref: "paper",
    y0: 0,
    y1: 1,
    line: { color: severityColor(mark.severity), width: 1.4, dash: "dot" },
    layer: "above",
    name: FINDINGS_TRACE,
  }));
}

/** The flags at the top of the findings' lines, with their hover text. */
export function findingTrace(marks) {
  return {
    type: "scatter",
    mode: "markers",
    name: FINDINGS_TRACE,
    x: marks.map((mark) => mark.step),
    y: marks.map(() => FINDING_Y),
    text: marks.map((mark) => plotlyText(mark.text)),
    yaxis: "y2",
    showlegend: false,
    cliponaxis: false,
    marker: { symbol: "triangle-down", size: 10, color: marks.map((mark) => severityColor(mark.severity)) },
    hovertemplate: "%{text}<extra></extra>",
  };
}
