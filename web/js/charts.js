// Plotly helpers: line charts that extend in place, and a layer x step heatmap.
// Plotly is window.Plotly, read when drawing: pages may load it after the modules start
// (see plotlyReady), so the data fetches overlap Plotly's parse.

import { formatValue, nonFiniteLabel, toNumber } from "./api.js";
import { clearPreview } from "./preview.js";

const PLOTLY_URL = "/static/vendor/plotly.min.js";
let plotlyRequested;
const plotlyRequest = new Promise((resolve) => {
  plotlyRequested = resolve;
});
let plotlyLoading = null;

function scriptLoaded(script) {
  return new Promise((resolve, reject) => {
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", () => reject(new Error("Plotly failed to load")));
  });
}

/**
 * Resolves once window.Plotly exists. A page may load Plotly with a deferred <script data-plotly>
 * (the data fetches overlap its parse), or on demand: then Plotly runs only once loadPlotly() is
 * called, so that a page can draw first (parsing Plotly blocks the main thread for a second or
 * more on a cold, slow machine) while a <link rel="preload"> has already fetched it.
 */
export function plotlyReady() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  const script = document.querySelector("script[data-plotly]");
  if (script) return scriptLoaded(script);
  return plotlyRequest.then(() => {
    if (window.Plotly) return window.Plotly;
    if (!plotlyLoading) {
      const tag = document.createElement("script");
      tag.src = PLOTLY_URL;
      plotlyLoading = scriptLoaded(tag);
      document.head.append(tag);
    }
    return plotlyLoading;
  });
}

/** Let an on-demand page run Plotly now; resolves as plotlyReady(). */
export function loadPlotly() {
  plotlyRequested();
  return plotlyReady();
}

const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const NONFINITE_COLOR = "#d62728";
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

/**
 * A line chart of several series. The first trace holds the red markers of non-finite values;
 * every series gets its own line trace. Live updates go through Plotly.extendTraces / addTraces
 * and never newPlot, so the user's zoom survives. After every draw the div carries
 * data-points (line points drawn, gaps included), data-nonfinite (markers drawn) and
 * data-series (line traces).
 *
 * Options: ytitle, mode, logy (start on a log axis), shapes (Plotly layout shapes, e.g. a shaded
 * warmup span), styleOf(name) (extra trace properties), labelOf(name) (the legend's name for a
 * series, default the series name), onUpdate(chart) (after each draw), and
 * fetchWindow(name, start, end) (a promise of a SeriesPoints read): with it, zooming the x axis
 * re-reads the visible window at full resolution and a double-click (autorange) re-reads the
 * whole series at the initial budget.
 *
 * setFindings(marks) marks health findings at their steps (see findingShapes); their flags are
 * one extra trace named "findings", last, and the div carries data-findings (lines drawn).
 */
export class LineChart {
  constructor(div, options = {}) {
    this.div = div;
    this.options = options;
    this.title = options.title;
    this.ytitle = options.ytitle || "";
    this.mode = options.mode || "lines";
    this.traceIndex = new Map();
    this.lastStep = new Map();
    // Every series' points as drawn (x and raw values, tokens kept), for window re-reads.
    this.store = new Map();
    this.points = 0;
    this.nonfinite = 0;
    this.started = false;
    this.windowReads = 0;
    this.findingMarks = [];
    this.findingIndex = null; // trace index of the findings' flags, once drawn
    // Plotly calls are asynchronous; chaining them keeps trace indices and counts consistent.
    this.queue = Promise.resolve();
  }

  lineTrace(name, line) {
    const style = this.options.styleOf ? this.options.styleOf(name) || {} : {};
    return {
      type: "scatter",
      mode: this.mode,
      name: plotlyText(this.options.labelOf ? this.options.labelOf(name) : name),
      x: line.x,
      y: line.y,
      connectgaps: false,
      hovertemplate: "%{y:.4g}",
      ...style,
      line: { width: 1.6, ...(style.line || {}) },
      marker: { size: 5, ...(style.marker || {}) },
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
    this.div.dataset.windowReads = String(this.windowReads);
    this.div.dataset.findings = String(this.findingIndex === null ? 0 : this.findingMarks.length);
    if (this.options.onUpdate) this.options.onUpdate(this);
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

  remember(name, steps, values) {
    this.store.set(name, { x: steps.slice(), v: values.slice() });
    this.lastStep.set(name, steps.reduce((a, b) => (b > a ? b : a), -Infinity));
  }

  async draw(series) {
    const traces = [];
    const allMarks = { x: [], y: [], text: [] };
    series.forEach((item, i) => {
      const steps = item.step || [];
      const line = splitPoints(item.name, steps, item.value || []);
      traces.push(this.lineTrace(item.name, line));
      this.traceIndex.set(item.name, i + 1);
      this.remember(item.name, steps, item.value || []);
      this.points += steps.length;
      this.nonfinite += line.marks.x.length;
      allMarks.x.push(...line.marks.x);
      allMarks.y.push(...line.marks.y);
      allMarks.text.push(...line.marks.text);
    });
    const layout = baseLayout(this.title, this.ytitle);
    if (this.options.logy) layout.yaxis.type = "log";
    layout.shapes = this.shapes();
    if (!traces.length) layout.annotations = [EMPTY_NOTE];
    const all = [this.markerTrace(allMarks), ...traces];
    this.findingIndex = null;
    if (this.findingMarks.length) {
      this.findingIndex = all.length;
      all.push(findingTrace(this.findingMarks));
    }
    clearPreview(this.div);
    await window.Plotly.newPlot(this.div, all, layout, PLOT_CONFIG);
    this.started = true;
    if (this.options.fetchWindow) {
      this.div.on("plotly_relayout", (event) => this.onRelayout(event || {}));
    }
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
      const Plotly = window.Plotly;
      const line = splitPoints(name, keepSteps, keepValues);
      if (this.traceIndex.has(name)) {
        await Plotly.extendTraces(this.div, { x: [line.x], y: [line.y] }, [this.traceIndex.get(name)]);
        const stored = this.store.get(name);
        stored.x.push(...keepSteps);
        stored.v.push(...keepValues);
      } else {
        const index = this.div.data.length;
        await Plotly.addTraces(this.div, this.lineTrace(name, line));
        this.traceIndex.set(name, index);
        this.store.set(name, { x: keepSteps.slice(), v: keepValues.slice() });
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

  shapes() {
    return [...(this.options.shapes || []), ...findingShapes(this.findingMarks)];
  }

  /** Mark findings at their steps ([{step, severity, text}]); replaces the marks shown. */
  setFindings(marks) {
    return this.enqueue(async () => {
      this.findingMarks = marks.slice();
      if (!this.started) return; // the first draw includes them
      const Plotly = window.Plotly;
      await Plotly.relayout(this.div, { shapes: this.shapes() });
      const flags = findingTrace(this.findingMarks);
      if (this.findingIndex !== null) {
        await Plotly.restyle(
          this.div,
          { x: [flags.x], y: [flags.y], text: [flags.text], "marker.color": [flags.marker.color] },
          [this.findingIndex],
        );
      } else if (this.findingMarks.length) {
        this.findingIndex = this.div.data.length;
        await Plotly.addTraces(this.div, flags);
      }
      this.publish();
    });
  }

  onRelayout(event) {
    let lo = event["xaxis.range[0]"];
    let hi = event["xaxis.range[1]"];
    if (Array.isArray(event["xaxis.range"])) [lo, hi] = event["xaxis.range"];
    if (lo !== undefined && hi !== undefined) {
      const start = Math.max(0, Math.floor(Math.min(lo, hi)));
      const end = Math.ceil(Math.max(lo, hi));
      this.enqueue(() => this.readWindow(start, end));
    } else if (event["xaxis.autorange"] === true) {
      this.enqueue(() => this.readWindow(undefined, undefined));
    }
  }

  /**
   * Re-read every series in [start, end] (undefined: the whole series at the initial budget)
   * and splice the answer into the drawn points: points outside the window stay as they were,
   * the window's points are replaced by the server's (exact when the window fits the budget).
   */
  async readWindow(start, end) {
    const names = [...this.traceIndex.keys()];
    if (!names.length) return;
    const reads = await Promise.all(names.map((name) => this.options.fetchWindow(name, start, end)));
    const whole = start === undefined;
    const xs = [];
    const ys = [];
    const indices = [];
    const allMarks = { x: [], y: [], text: [] };
    this.points = 0;
    this.nonfinite = 0;
    names.forEach((name, i) => {
      const read = reads[i] || { step: [], value: [] };
      const old = this.store.get(name) || { x: [], v: [] };
      let x = read.step || [];
      let v = read.value || [];
      if (!whole) {
        const beforeX = [];
        const beforeV = [];
        const afterX = [];
        const afterV = [];
        const lastRead = x.length ? x[x.length - 1] : -Infinity;
        for (let k = 0; k < old.x.length; k += 1) {
          if (old.x[k] < start) {
            beforeX.push(old.x[k]);
            beforeV.push(old.v[k]);
          } else if (old.x[k] > end && old.x[k] > lastRead) {
            afterX.push(old.x[k]);
            afterV.push(old.v[k]);
          }
        }
        x = [...beforeX, ...x, ...afterX];
        v = [...beforeV, ...v, ...afterV];
      }
      // Points drawn live after the read's cursor stay; the read never loses a newer point.
      const lastOld = this.lastStep.has(name) ? this.lastStep.get(name) : -Infinity;
      const lastNew = x.length ? x[x.length - 1] : -Infinity;
      if (lastOld > lastNew) {
        for (let k = 0; k < old.x.length; k += 1) {
          if (old.x[k] > lastNew) {
            x.push(old.x[k]);
            v.push(old.v[k]);
          }
        }
      }
      this.remember(name, x, v);
      const line = splitPoints(name, x, v);
      xs.push(line.x);
      ys.push(line.y);
      indices.push(this.traceIndex.get(name));
      this.points += x.length;
      this.nonfinite += line.marks.x.length;
      allMarks.x.push(...line.marks.x);
      allMarks.y.push(...line.marks.y);
      allMarks.text.push(...line.marks.text);
    });
    const Plotly = window.Plotly;
    await Plotly.restyle(this.div, { x: xs, y: ys }, indices);
    await Plotly.restyle(
      this.div,
      { x: [allMarks.x], y: [allMarks.y], text: [allMarks.text], showlegend: allMarks.x.length > 0 },
      [0],
    );
    this.windowReads += 1;
    this.div.dataset.window = whole ? "" : `${start},${end}`;
    this.publish();
  }

  has(name) {
    return this.traceIndex.has(name);
  }

  toggleLogY() {
    return this.enqueue(async () => {
      const isLog = this.div.layout && this.div.layout.yaxis && this.div.layout.yaxis.type === "log";
      await window.Plotly.relayout(this.div, { "yaxis.type": isLog ? "linear" : "log" });
    });
  }
}

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

/**
 * Shapes for the update-to-weight ratio: a shaded healthy band 1e-4 .. 1e-2 and a dashed line
 * at the 1e-3 rule of thumb (CS231n). The chart's y axis is logarithmic.
 */
export function ratioBandShapes() {
  return [
    {
      type: "rect",
      xref: "paper",
      x0: 0,
      x1: 1,
      yref: "y",
      y0: 1e-4,
      y1: 1e-2,
      fillcolor: "rgba(21, 128, 61, 0.08)",
      line: { width: 0 },
      layer: "below",
    },
    {
      type: "line",
      xref: "paper",
      x0: 0,
      x1: 1,
      yref: "y",
      y0: 1e-3,
      y1: 1e-3,
      line: { color: "rgba(21, 128, 61, 0.7)", width: 1.2, dash: "dash" },
    },
  ];
}

/** A shaded x span (e.g. the warmup steps) over the whole plot height. */
export function spanShape(x0, x1) {
  return {
    type: "rect",
    xref: "x",
    x0,
    x1,
    yref: "paper",
    y0: 0,
    y1: 1,
    fillcolor: "rgba(37, 99, 235, 0.08)",
    line: { width: 0 },
    layer: "below",
  };
}

/**
 * Histograms over time as one heatmap: steps on x, bin centres on y, log10(1 + count) as colour.
 * Every step has its own [lo, hi] range, so its bins are re-binned by centre onto one common grid
 * of `rows` bins spanning all steps.
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
  const width = (gHi - gLo) / rows;
  const centres = [];
  for (let r = 0; r < rows; r += 1) centres.push(gLo + (r + 0.5) * width);
  const counts = [];
  for (let r = 0; r < rows; r += 1) counts.push(new Array(steps.length).fill(0));
  let total = 0;
  for (let j = 0; j < steps.length; j += 1) {
    const row = (hist.counts && hist.counts[j]) || [];
    const lo = los[j];
    const hi = his[j];
    if (!row.length || !Number.isFinite(lo) || !Number.isFinite(hi)) continue;
    const binWidth = (hi - lo) / row.length;
    for (let k = 0; k < row.length; k += 1) {
      const count = toNumber(row[k]);
      if (!count || !Number.isFinite(count)) continue;
      const centre = lo + (k + 0.5) * binWidth;
      const r = Math.min(rows - 1, Math.max(0, Math.floor((centre - gLo) / width)));
      counts[r][j] += count;
      total += count;
    }
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
      hovertemplate: `step %{x}<br>value ≈ %{y:.3g}<br>count %{customdata}<extra>${name}</extra>`,
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
    });
  }
  return { traces, steps: steps.length, rows, total, nonfinite: marks.x.length };
}

/** Histograms of one tensor over time (see histogramTraces). */
export class HistogramChart {
  constructor(div) {
    this.div = div;
    this.started = false;
  }

  async render(hist) {
    const { traces, steps, total, nonfinite } = histogramTraces(hist);
    const layout = {
      height: 320,
      margin: { l: 64, r: 16, t: 16, b: 40 },
      uirevision: `hist:${hist.name || ""}`,
      xaxis: { title: { text: "step" }, zeroline: false },
      yaxis: { title: { text: "value (bin centre)" }, zeroline: false, automargin: true },
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
