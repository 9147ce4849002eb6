// Histograms of one tensor over time, as a step x value heatmap of counts.

import { formatValue, toNumber } from "./api.js";
import { EMPTY_NOTE, NONFINITE_COLOR, PLOT_CONFIG, plotlyText } from "./chart-base.js";

/**
 * Histograms over time as one heatmap: steps on x, bin centres on y, log10(1 + count) as colour.
 * Every histogram has its own bins and its own [lo, hi] range (a layer may be binned 64 ways at
 * some steps and 32 at others; the server pads the shorter rows with zeros and says how many bins
 * each has in `row_bins`), so each is resampled onto one common grid of `rows` cells spanning all
 * of them: a bin's count is shared among the cells it overlaps, in proportion to the overlap.
 * Each column keeps its histogram's total and shape whatever its bins.
 */
export function histogramTraces(hist, rows = 64) {
  const steps = hist.step || [];
  const los = (hist.lo || []).map(toNumber);
  const his = (hist.hi || []).map(toNumber);
  let gLo = Infinity;
  let gHi = -Infinity;
  for (let j = 0; j < steps.length; j += 1) {
    if (Number.isFinite(los[j]) && los[j] < gLo) gLo = los[j];
    if (Number.isFinite(his[j]) && his[j] > gHi) gHi = his[j];
  }
  if (!Number.isFinite(gLo) || !Number.isFinite(gHi)) {
    gLo = 0;
    gHi = 1;
  }
  if (gHi <= gLo) gHi = gLo + 1;
  const grid = { lo: gLo, width: (gHi - gLo) / rows, rows };
  const centres = [];
  for (let r = 0; r < rows; r += 1) centres.push(gLo + (r + 0.5) * grid.width);
  const counts = [];
  for (let r = 0; r < rows; r += 1) counts.push(new Array(steps.length).fill(0));
  let total = 0;
  for (let j = 0; j < steps.length; j += 1) {
    const row = ownBins(hist, j);
    if (!row.length || !Number.isFinite(los[j]) || !Number.isFinite(his[j])) continue;
    total += resampleRow(row, los[j], his[j], grid, (r, count) => {
      counts[r][j] += count;
    });
  }
  const z = counts.map((row) => row.map((count) => (count > 0 ? Math.log10(1 + count) : null)));
  const name = plotlyText(hist.name || "");
  const traces = [
    {
      type: "heatmap",
      x: steps,
      y: centres,
      z,
      customdata: counts,
      colorscale: "Viridis",
      hoverongaps: false,
      colorbar: { title: { text: "log10(1+count)", side: "right" }, thickness: 12 },
      hovertemplate: `step %{x}<br>value ≈ %{y:.3g}<br>count %{customdata:.4~g}<extra>${name}</extra>`,
    },
  ];
  const marks = { x: [], y: [], text: [] };
  (hist.nonfinite || []).forEach((value, j) => {
    const count = toNumber(value);
    if (count) {
      marks.x.push(steps[j]);
      marks.y.push(gHi);
      marks.text.push(`${formatValue(count)} non-finite values at step ${steps[j]}`);
    }
  });
  if (marks.x.length) {
    traces.push({
      type: "scatter",
      mode: "markers",
      name: "non-finite",
      ...marks,
      marker: { symbol: "x", size: 9, color: NONFINITE_COLOR },
      hovertemplate: "%{text}<extra></extra>",
      showlegend: false,
      cliponaxis: false, // they sit on the top edge of the value range
    });
  }
  // The axes end where the data does: steps from the first histogram to the last (Plotly's own
  // range would add half a column each side, e.g. -50 … last+50 at one histogram per 100 steps),
  // values over the bins' common range.
  const first = steps.length ? Math.min(...steps) : 0;
  const last = steps.length ? Math.max(...steps) : 1;
  const xrange = last > first ? [first, last] : [first - 0.5, first + 0.5];
  return { traces, steps: steps.length, rows, total, nonfinite: marks.x.length, xrange, yrange: [gLo, gHi] };
}

/** The counts of histogram `j` in its own bins: the server pads a row to the most bins of any. */
function ownBins(hist, j) {
  const row = (hist.counts && hist.counts[j]) || [];
  const bins = hist.row_bins ? Number(hist.row_bins[j]) : row.length;
  return Number.isInteger(bins) && bins > 0 && bins < row.length ? row.slice(0, bins) : row;
}

/**
 * Spread one histogram (`row` counts in equal bins over [lo, hi]) over the grid's cells, each
 * count taken as uniform within its bin; `add(cell, count)` receives the shares. A bin of zero
 * width (a single value) goes whole to the cell holding it. Returns the row's total.
 */
function resampleRow(row, lo, hi, grid, add) {
  const binWidth = (hi - lo) / row.length;
  const cellOf = (value) =>
    Math.min(grid.rows - 1, Math.max(0, Math.floor((value - grid.lo) / grid.width)));
  let total = 0;
  for (let k = 0; k < row.length; k += 1) {
    const count = toNumber(row[k]);
    if (!count || !Number.isFinite(count)) continue;
    total += count;
    const a = lo + k * binWidth;
    const b = k === row.length - 1 ? hi : a + binWidth;
    const shares = [];
    let covered = 0;
    if (b > a) {
      for (let r = cellOf(a); r <= cellOf(b); r += 1) {
        const cellLo = grid.lo + r * grid.width;
        const overlap = Math.min(b, cellLo + grid.width) - Math.max(a, cellLo);
        if (overlap > (b - a) * 1e-9) {
          shares.push([r, overlap]);
          covered += overlap;
        }
      }
    }
    if (!shares.length) {
      add(cellOf((a + b) / 2), count);
      continue;
    }
    // Normalised by what the cells cover (the bin itself, up to rounding): the row's total stays.
    for (const [r, overlap] of shares) add(r, (count * overlap) / covered);
  }
  return total;
}

/** Histograms of one tensor over time (see histogramTraces). */
export class HistogramChart {
  constructor(div) {
    this.div = div;
    this.started = false;
  }

  async render(hist) {
    const { traces, steps, total, nonfinite, xrange, yrange } = histogramTraces(hist);
    const layout = {
      height: 320,
      margin: { l: 64, r: 16, t: 16, b: 40 },
      uirevision: `hist:${hist.name || ""}`,
      xaxis: { title: { text: "step" }, zeroline: false, range: steps ? xrange : undefined },
      yaxis: {
        title: { text: "value (bin centre)" },
        zeroline: false,
        automargin: true,
        range: steps ? yrange : undefined,
      },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#f4f5f7",
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
    };
    if (!steps) layout.annotations = [{ ...EMPTY_NOTE, text: "no histograms for this layer" }];
    if (this.started) {
      await window.Plotly.react(this.div, traces, layout, PLOT_CONFIG);
    } else {
      await window.Plotly.newPlot(this.div, traces, layout, PLOT_CONFIG);
      this.started = true;
    }
    this.div.dataset.points = String(steps);
    this.div.dataset.total = String(total);
    this.div.dataset.nonfinite = String(nonfinite);
    this.div.dataset.name = hist.name || "";
  }
}
