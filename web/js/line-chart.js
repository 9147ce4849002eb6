// A line chart of several series that extends in place (live points), marks findings at their
// steps and re-reads a zoomed window at full resolution.

import {
  EMPTY_NOTE,
  NONFINITE_COLOR,
  PLOT_CONFIG,
  baseLayout,
  findingShapes,
  findingTrace,
  plotlyText,
  splitPoints,
  zoomedSteps,
} from "./chart-base.js";
import { toNumber } from "./api.js";
import { clearPreview } from "./preview.js";

/** Whether every finite value is above zero (what a log axis can draw; gaps do not count). */
function allPositive(values) {
  for (const value of values) {
    const number = toNumber(value);
    if (number !== null && Number.isFinite(number) && number <= 0) return false;
  }
  return true;
}

/**
 * A line chart of several series. The first trace holds the red markers of non-finite values;
 * every series gets its own line trace. Live updates go through Plotly.extendTraces / addTraces
 * and never newPlot, so the user's zoom survives. After every draw the div carries
 * data-points (line points drawn, gaps included), data-nonfinite (markers drawn) and
 * data-series (line traces) and data-yaxis ("log" or "linear").
 *
 * Options: ytitle, mode, logy (a log axis while every value is positive: a zero or a negative
 * value, which a log axis cannot draw, turns it linear unless the user chose the axis), shapes (Plotly layout shapes, e.g. a shaded
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
    this.userAxis = false; // the user toggled the y axis: it stays as they chose
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
    const yaxis = this.div.layout && this.div.layout.yaxis;
    this.div.dataset.yaxis = yaxis && yaxis.type === "log" ? "log" : "linear";
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
    const drawable = series.every((item) => allPositive(item.value || []));
    if (this.options.logy && drawable) layout.yaxis.type = "log";
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
      if (!allPositive(keepValues)) await this.linearUnlessChosen();
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

  /** Replace the chart's own shapes (a band, a span); the findings' lines stay. */
  setShapes(shapes) {
    return this.enqueue(async () => {
      this.options.shapes = shapes.slice();
      if (!this.started) return; // the first draw includes them
      await window.Plotly.relayout(this.div, { shapes: this.shapes() });
      this.publish();
    });
  }

  /** A value a log axis cannot draw arrived: switch to linear, unless the user chose log. */
  async linearUnlessChosen() {
    const yaxis = this.div.layout && this.div.layout.yaxis;
    if (this.userAxis || !yaxis || yaxis.type !== "log") return;
    await window.Plotly.relayout(this.div, { "yaxis.type": "linear" });
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
    const zoom = zoomedSteps(event);
    if (zoom && !zoom.autorange) {
      this.enqueue(() => this.readWindow(zoom.start, zoom.end));
    } else if (zoom) {
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
    if (!reads.every((read) => allPositive((read && read.value) || []))) await this.linearUnlessChosen();
    this.windowReads += 1;
    this.div.dataset.window = whole ? "" : `${start},${end}`;
    this.publish();
  }

  has(name) {
    return this.traceIndex.has(name);
  }

  toggleLogY() {
    return this.enqueue(async () => {
      this.userAxis = true;
      const isLog = this.div.layout && this.div.layout.yaxis && this.div.layout.yaxis.type === "log";
      await window.Plotly.relayout(this.div, { "yaxis.type": isLog ? "linear" : "log" });
      this.publish();
    });
  }
}
