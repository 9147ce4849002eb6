// One panel of the compare grid: one series of every selected run on one Plotly chart, one
// colour per run (the same on every panel), each run's line smoothed with the raw line faint
// behind it. Zooming re-reads the visible window of every run in one request.

import { api, nonFiniteLabel } from "./api.js";
import { zoomedSteps } from "./chart-base.js";
import { plotlyText } from "./charts.js";
import { el } from "./dom.js";
import { emaSmooth, rawLine } from "./smoothing.js";

const POINTS = 2000;
const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

function layout(name) {
  return {
    margin: { l: 56, r: 16, t: 12, b: 36 },
    height: 300,
    uirevision: "keep", // zoom and legend choices survive redraws (smoothing, window reads)
    hovermode: "x unified",
    showlegend: true,
    legend: { orientation: "h", x: 0, y: -0.14, yanchor: "top", font: { size: 11 } },
    xaxis: { automargin: true, zeroline: false, hoverformat: "d" },
    yaxis: { title: { text: plotlyText(name) }, automargin: true, zeroline: false },
    // The non-finite markers sit at the top of the plot, on a hidden 0..1 axis.
    yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
  };
}

/** Points of `whole` outside [start, end] around the window's points (the window replaces). */
function splice(whole, window, start, end) {
  const step = [];
  const value = [];
  const push = (s, v) => {
    step.push(s);
    value.push(v);
  };
  whole.step.forEach((s, i) => s < start && push(s, whole.value[i]));
  window.step.forEach((s, i) => push(s, window.value[i]));
  whole.step.forEach((s, i) => s > end && push(s, whole.value[i]));
  return { step, value };
}

export class ComparePanel {
  /**
   * `runs`: [{id, label, color}] in the page's order; `smoothing`: the EMA weight to start with;
   * `onRemove(panel)`: the user closed the panel.
   */
  constructor(name, runs, smoothing, onRemove) {
    this.name = name;
    this.runs = runs;
    this.smoothing = smoothing;
    this.whole = new Map(); // run id -> {step, value} of the whole-series read
    this.shown = new Map(); // run id -> what is drawn (the whole read with a window spliced in)
    this.queue = Promise.resolve();
    this.div = el("div", { className: "chart compare-chart", dataset: { name, points: "0" } });
    const logy = el("button", { className: "small", text: "log y", attrs: { type: "button" } });
    logy.addEventListener("click", () => this.enqueue(() => this.toggleLogY()));
    const close = el("button", {
      className: "small",
      text: "\u00d7",
      title: "remove this panel",
      attrs: { type: "button", "aria-label": `remove ${name}` },
    });
    close.addEventListener("click", () => onRemove(this));
    this.card = el("section", { className: "card compare-panel", dataset: { name } }, [
      el("div", { className: "card-head" }, [
        el("h2", { text: name }),
        el("div", { className: "picker" }, [logy, close]),
      ]),
      this.div,
    ]);
  }

  enqueue(task) {
    this.queue = this.queue.then(task).catch((error) => {
      this.div.dataset.error = String(error && error.message ? error.message : error);
    });
    return this.queue;
  }

  /** Read the series of every run (one request) and draw it. */
  load() {
    return this.enqueue(async () => {
      await this.readWhole();
      this.div.on("plotly_relayout", (event) => this.onRelayout(event || {}));
    });
  }

  /** Read the whole series again (runs still training), unless the user zoomed into a window. */
  reload() {
    return this.enqueue(async () => {
      if (!this.div.dataset.window) await this.readWhole();
    });
  }

  async readWhole() {
    const answer = await api.compare(
      this.runs.map((run) => run.id),
      this.name,
      POINTS,
    );
    for (const item of answer.runs) {
      const columns = { step: item.step || [], value: item.value || [] };
      this.whole.set(item.run_id, columns);
      this.shown.set(item.run_id, columns);
    }
    await this.draw();
  }

  /** Markers at the top of the plot where a run's value is NaN or infinite (not a silent gap). */
  nonFiniteTrace(run, columns) {
    const x = [];
    const text = [];
    columns.value.forEach((value, i) => {
      const label = nonFiniteLabel(value);
      if (label) {
        x.push(columns.step[i]);
        text.push(`${plotlyText(run.label)}: ${label} at step ${columns.step[i]}`);
      }
    });
    if (!x.length) return null;
    return {
      type: "scatter",
      mode: "markers",
      name: "non-finite",
      x,
      y: x.map(() => 0.96),
      text,
      yaxis: "y2",
      legendgroup: run.id,
      showlegend: false,
      hovertemplate: "%{text}<extra></extra>",
      marker: { symbol: "x", size: 10, color: run.color, line: { width: 2, color: run.color } },
      meta: { run: run.id, raw: true, nonfinite: true },
    };
  }

  traces() {
    const traces = [];
    const marks = [];
    for (const run of this.runs) {
      const columns = this.shown.get(run.id) || { step: [], value: [] };
      const name = plotlyText(run.label);
      // The raw line first (behind), faint; hidden when nothing is smoothed.
      traces.push({
        type: "scatter",
        mode: "lines",
        name,
        x: columns.step,
        y: rawLine(columns.value),
        legendgroup: run.id,
        showlegend: false,
        visible: this.smoothing > 0,
        hoverinfo: "skip",
        opacity: 0.25,
        line: { color: run.color, width: 1 },
        meta: { run: run.id, raw: true },
      });
      traces.push({
        type: "scatter",
        mode: columns.step.length === 1 ? "markers" : "lines",
        name,
        x: columns.step,
        y: emaSmooth(columns.value, this.smoothing),
        legendgroup: run.id,
        hovertemplate: "%{y:.4g}",
        connectgaps: false,
        line: { color: run.color, width: 1.6 },
        marker: { color: run.color, size: 6 },
        meta: { run: run.id, raw: false },
      });
      const nonfinite = this.nonFiniteTrace(run, columns);
      if (nonfinite) marks.push(nonfinite);
    }
    return [...traces, ...marks];
  }

  async draw() {
    await window.Plotly.react(this.div, this.traces(), layout(this.name), PLOT_CONFIG);
    let points = 0;
    let series = 0;
    let nonfinite = 0;
    for (const columns of this.shown.values()) {
      points += columns.step.length;
      if (columns.step.length) series += 1;
      nonfinite += columns.value.filter((value) => nonFiniteLabel(value)).length;
    }
    this.div.dataset.points = String(points);
    this.div.dataset.nonfinite = String(nonfinite);
    this.div.dataset.series = String(series);
    this.div.dataset.smoothing = String(this.smoothing);
  }

  /** Redraw with another EMA weight (0 to 0.99); nothing is read again. */
  setSmoothing(weight) {
    this.smoothing = weight;
    return this.enqueue(() => this.draw());
  }

  async toggleLogY() {
    const isLog = this.div.layout && this.div.layout.yaxis && this.div.layout.yaxis.type === "log";
    await window.Plotly.relayout(this.div, { "yaxis.type": isLog ? "linear" : "log" });
  }

  onRelayout(event) {
    const zoom = zoomedSteps(event);
    if (zoom && !zoom.autorange) {
      this.enqueue(() => this.readWindow(zoom.start, zoom.end));
    } else if (zoom) {
      this.enqueue(async () => {
        this.shown = new Map(this.whole);
        await this.draw();
        this.div.dataset.window = "";
      });
    }
  }

  /** Re-read [start, end] of every run at full resolution and splice it into the whole read. */
  async readWindow(start, end) {
    const answer = await api.compare(
      this.runs.map((run) => run.id),
      this.name,
      POINTS,
      start,
      end,
    );
    for (const item of answer.runs) {
      const whole = this.whole.get(item.run_id) || { step: [], value: [] };
      this.shown.set(item.run_id, splice(whole, item, start, end));
    }
    await this.draw();
    this.div.dataset.window = `${start},${end}`;
  }

  /** Remove the chart (Plotly's listeners and all) from the page. */
  destroy() {
    window.Plotly.purge(this.div);
    this.card.remove();
  }
}
