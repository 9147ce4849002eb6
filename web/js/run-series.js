// Where each series of a run goes on the run page: an overview chart, a trick panel, the
// per-layer section (by statistic and layer), or an "other metrics" card by family.

import { PANELS } from "./panels.js";

export const POINTS = 2000; // per-series budget of a read; the server downsamples to it

const PRECLIP = "grad_norm/total_preclip";

/**
 * The fixed overview charts (in the page's HTML). The global norm is measured at
 * optimizer.step(), after any clipping; the agent also measures it before clipping (a second,
 * dashed trace), so a clipped run shows both what the optimizer got and what backward made.
 */
export const OVERVIEW = [
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
export const LAYER_CHARTS = [
  // Magnitudes on a log axis; the signed means apart, on a linear one (a log axis drops every
  // negative mean and draws the rest as a comb).
  { key: "grad", id: "chart-layer-grad", logy: true, match: (stat) => /^grad_(norm|max|std)$/.test(stat) },
  { key: "weight", id: "chart-layer-weight", match: (stat) => /^weight_(norm|std)$/.test(stat) },
  { key: "means", id: "chart-layer-means", match: (stat) => stat === "grad_mean" || stat === "weight_mean" },
  { key: "ratio", id: "chart-update-ratio", logy: true, band: true, match: (stat) => stat === "update_ratio" },
  { key: "health", id: "chart-layer-health", match: () => true },
];

export function layerChartKey(stat) {
  return LAYER_CHARTS.find((chart) => chart.match(stat)).key;
}

export function familyOf(name) {
  const slash = name.indexOf("/");
  return slash > 0 ? name.slice(0, slash) : name;
}

/** The declared layer a series name ends with, as {stat, layer}, or null. */
function layerOf(name, layers) {
  if (name === "grad_norm/total") return null;
  for (let at = name.indexOf("/"); at > 0; at = name.indexOf("/", at + 1)) {
    const layer = name.slice(at + 1);
    if (layers.has(layer)) return { stat: name.slice(0, at), layer };
  }
  return null;
}

/**
 * Where a series goes: {kind: "overview", key} | {kind: "panel", key} | {kind: "layer", stat,
 * layer} | {kind: "other", family}. ε dominance is per layer but has its own trick panel too.
 * `layers` is the set of the run's declared layers.
 */
export function classify(name, layers) {
  for (const chart of OVERVIEW) if (chart.match(name)) return { kind: "overview", key: chart.key };
  if (name.startsWith("opt/eps_dominance/")) return { kind: "panel", key: "epsdom", ...layerOf(name, layers) };
  const layer = layerOf(name, layers);
  if (layer) return { kind: "layer", ...layer };
  for (const panel of PANELS) if (panel.match(name)) return { kind: "panel", key: panel.key };
  return { kind: "other", family: familyOf(name) };
}
