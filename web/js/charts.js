// Plotly helpers: line charts that extend in place, and a layer x step heatmap.
// Plotly is loaded by a classic <script> before the modules, as window.Plotly.

import { formatValue, nonFiniteLabel, toNumber } from "./api.js";

const Plotly = window.Plotly;

const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const NONFINITE_COLOR = "#d62728";
// Where the non-finite markers sit, on a hidden 0..1 axis overlaying the data: the top of the plot.
const MARKER_Y = 0.96;

/**
 * Plotly renders a few HTML-like tags inside strings (<b>, <a>, <br>...) as SVG text. Names are
 * untrusted and should read literally, so escape them; Plotly turns the entities back into text.
 */
export function plotlyText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function baseLayout(title, ytitle) {
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

const EMPTY_NOTE = {
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

/**
 * A line chart of several series. The first trace holds the red markers of non-finite values;
 * every series gets its own line trace. Updates go through Plotly.extendTraces / addTraces and
 * never newPlot, so the user's zoom survives. After every draw the div carries
 * data-points (line points drawn, gaps included) and data-nonfinite (markers drawn).
 */
export class LineChart {
  constructor(div, { title, ytitle = "", mode = "lines" }) {
    this.div = div;
    this.title = title;
    this.ytitle = ytitle;
    this.mode = mode;
    this.traceIndex = new Map();
    this.lastStep = new Map();
    this.points = 0;
    this.nonfinite = 0;
    this.started = false;
    // Plotly calls are asynchronous; chaining them keeps trace indices and counts consistent.
    this.queue = Promise.resolve();
  }

  lineTrace(name, line) {
    return {
      type: "scatter",
      mode: this.mode,
      name: plotlyText(name),
      x: line.x,
      y: line.y,
      connectgaps: false,
      line: { width: 1.6 },
      marker: { size: 5 },
      hovertemplate: "%{y:.4g}",
    };
  }

  markerTrace(marks) {
    return {
      type: "scatter",
      mode: "markers",
      name: "non-finite",
      x: marks.x,
      y: marks.y,
      text: marks.text,
      yaxis: "y2",
      showlegend: marks.x.length > 0,
      marker: { symbol: "x", size: 11, color: NONFINITE_COLOR, line: { width: 2, color: NONFINITE_COLOR } },
      hovertemplate: "%{text}<extra></extra>",
    };
  }

  publish() {
    this.div.dataset.points = String(this.points);
    this.div.dataset.nonfinite = String(this.nonfinite);
    this.div.dataset.series = String(this.traceIndex.size);
  }

  enqueue(task) {
    this.queue = this.queue.then(task).catch((error) => {
      this.div.dataset.error = String(error && error.message ? error.message : error);
    });
    return this.queue;
  }

  /** First draw. `series` is a list of {name, step, value} read over REST. */
  init(series) {
    return this.enqueue(() => this.draw(series));
  }

  async draw(series) {
    const traces = [];
    const allMarks = { x: [], y: [], text: [] };
    series.forEach((item, i) => {
      const steps = item.step || [];
      const line = splitPoints(item.name, steps, item.value || []);
      traces.push(this.lineTrace(item.name, line));
      this.traceIndex.set(item.name, i + 1);
      this.lastStep.set(item.name, steps.reduce((a, b) => (b > a ? b : a), -Infinity));
      this.points += steps.length;
      this.nonfinite += line.marks.x.length;
      allMarks.x.push(...line.marks.x);
      allMarks.y.push(...line.marks.y);
      allMarks.text.push(...line.marks.text);
    });
    const layout = baseLayout(this.title, this.ytitle);
    if (!traces.length) layout.annotations = [EMPTY_NOTE];
    await Plotly.newPlot(this.div, [this.markerTrace(allMarks), ...traces], layout, PLOT_CONFIG);
    this.started = true;
    this.publish();
  }

  /** Append live points; steps already drawn for this series are skipped (overlap after resume). */
  extend(name, steps, values) {
    return this.enqueue(async () => {
      const last = this.lastStep.has(name) ? this.lastStep.get(name) : -Infinity;
      const keepSteps = [];
      const keepValues = [];
      for (let i = 0; i < steps.length; i += 1) {
        if (steps[i] > last && (!keepSteps.length || steps[i] > keepSteps[keepSteps.length - 1])) {
          keepSteps.push(steps[i]);
          keepValues.push(values[i]);
        }
      }
      if (!keepSteps.length) return;
      if (!this.started) {
        await this.draw([{ name, step: keepSteps, value: keepValues }]);
        return;
      }
      const line = splitPoints(name, keepSteps, keepValues);
      if (this.traceIndex.has(name)) {
        await Plotly.extendTraces(this.div, { x: [line.x], y: [line.y] }, [this.traceIndex.get(name)]);
      } else {
        const index = this.div.data.length;
        await Plotly.addTraces(this.div, this.lineTrace(name, line));
        this.traceIndex.set(name, index);
        if (this.traceIndex.size === 1) await Plotly.relayout(this.div, { annotations: [] });
      }
      if (line.marks.x.length) {
        const marks = line.marks;
        await Plotly.extendTraces(this.div, { x: [marks.x], y: [marks.y], text: [marks.text] }, [0]);
        if (!this.nonfinite) await Plotly.restyle(this.div, { showlegend: true }, [0]);
        this.nonfinite += marks.x.length;
      }
      this.lastStep.set(name, keepSteps[keepSteps.length - 1]);
      this.points += keepSteps.length;
      this.publish();
    });
  }

  has(name) {
    return this.traceIndex.has(name);
  }

  toggleLogY() {
    return this.enqueue(async () => {
      const isLog = this.div.layout && this.div.layout.yaxis && this.div.layout.yaxis.type === "log";
      await Plotly.relayout(this.div, { "yaxis.type": isLog ? "linear" : "log" });
    });
  }
}

function rowGeometry(layerCount) {
  // A fixed row height: the chart grows with the model, so 200+ layers stay readable.
  if (layerCount <= 30) return { row: 18, font: 11 };
  if (layerCount <= 100) return { row: 12, font: 9 };
  return { row: 9, font: 8 };
}

/**
 * Build the Plotly traces of a heatmap answer: log10 of each value as the colour, the real value
 * in the hover, non-finite cells as red markers.
 */
export function heatmapTraces(heatmap) {
  const layers = heatmap.layers || [];
  const steps = heatmap.step || [];
  const rows = heatmap.z || [];
  const labels = layers.map(plotlyText);
  const z = [];
  const hover = [];
  const marks = { x: [], y: [], text: [] };
  let minLog = Infinity;
  let maxLog = -Infinity;
  const zeros = [];
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
      } else if (value > 0) {
        const log = Math.log10(value);
        zRow[j] = log;
        if (log < minLog) minLog = log;
        if (log > maxLog) maxLog = log;
      } else if (value === 0) {
        zeros.push([i, j]);
      }
    }
    z.push(zRow);
    hover.push(hRow);
  }
  if (!Number.isFinite(minLog)) {
    minLog = 0;
    maxLog = 0;
  }
  // log10(0) does not exist; a zero norm (a dead layer) takes the bottom of the colour scale.
  for (const [i, j] of zeros) z[i][j] = minLog - 1;
  if (zeros.length) minLog -= 1;
  const tickvals = [];
  for (let k = Math.floor(minLog); k <= Math.ceil(maxLog); k += 1) tickvals.push(k);
  const stat = plotlyText(heatmap.stat || "value");
  const traces = [
    {
      type: "heatmap",
      x: steps,
      y: labels,
      z,
      customdata: hover,
      colorscale: "Viridis",
      zmin: minLog,
      zmax: maxLog > minLog ? maxLog : minLog + 1,
      hoverongaps: false,
      colorbar: {
        title: { text: `${stat} (log)`, side: "right" },
        tickvals,
        ticktext: tickvals.map((k) => `1e${k}`),
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
      await Plotly.react(this.div, traces, layout, PLOT_CONFIG);
    } else {
      await Plotly.newPlot(this.div, traces, layout, PLOT_CONFIG);
      this.started = true;
    }
    this.div.dataset.points = String(cells);
    this.div.dataset.layers = String(labels.length);
    this.div.dataset.steps = String((heatmap.step || []).length);
    this.div.dataset.nonfinite = String(nonfinite);
    this.div.dataset.stat = stat;
  }
}
