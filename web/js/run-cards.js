// The run page's chart cards made on demand: one per trick panel (panels.js, in their fixed
// order, shown once a series needs them) and one per family of other metrics. Every card's chart
// re-reads a zoomed window over REST.

import { api, toNumber } from "./api.js";
import { LineChart, spanShape } from "./charts.js";
import { el } from "./dom.js";
import { stepMarks } from "./findings.js";
import { PANELS } from "./panels.js";
import { panelDrawn } from "./run-facts.js";
import { markFirstChart } from "./run-hooks.js";
import { POINTS } from "./run-series.js";

/** Trick panels that mark the findings' steps too (beside the overview charts). */
export const FINDING_PANELS = new Set(["lr"]);

function slug(text) {
  return text.replace(/[^A-Za-z0-9_-]/g, "_");
}

export function windowReader(state) {
  return (name, start, end) => api.points(state.runId, name, POINTS, start, end);
}

/** config.tricks.schedule.warmup_steps (or any warmup_steps under config.tricks), if positive. */
function configWarmup(config) {
  const tricks = config && config.tricks;
  if (!tricks || typeof tricks !== "object") return null;
  const direct = tricks.schedule && tricks.schedule.warmup_steps;
  if (typeof direct === "number" && direct > 0) return direct;
  for (const value of Object.values(tricks)) {
    if (value && typeof value === "object" && typeof value.warmup_steps === "number" && value.warmup_steps > 0) {
      return value.warmup_steps;
    }
  }
  return null;
}

/**
 * The warmup to shade, as {steps, source}, or null: what `watch` saw of the scheduler (the setup
 * document's scheduler.warmup_steps) first, else what the config declares under config.tricks.
 */
export function warmupOf(run) {
  const scheduler = run && run.setup && run.setup.scheduler;
  const seen = scheduler && typeof scheduler === "object" ? toNumber(scheduler.warmup_steps) : null;
  if (Number.isFinite(seen) && seen > 0) return { steps: seen, source: "the scheduler" };
  const declared = configWarmup(run && run.config);
  return declared ? { steps: declared, source: "config.tricks" } : null;
}

/** A card with a line chart, appended to `parent`; returns the chart. */
function card(state, parent, { id, title, ytitle, mode, logy, shapes, style, note, onDraw }) {
  const div = el("div", { className: "chart", id });
  const logButton = el("button", { className: "small", text: "log y", attrs: { type: "button" } });
  const noteNode = el("p", { className: "note muted small-text" });
  const section = el("section", { className: "card", id: `card-${id.slice("chart-".length)}` }, [
    el("div", { className: "card-head" }, [el("h2", { text: title }), logButton]),
    noteNode,
    div,
  ]);
  parent.append(section);
  const chart = new LineChart(div, {
    ytitle,
    mode,
    logy,
    shapes,
    styleOf: style ? (name) => style(name, state) : undefined,
    fetchWindow: windowReader(state),
    onUpdate: (drawn) => {
      markFirstChart();
      if (note) noteNode.textContent = note(drawn);
      if (onDraw) onDraw(drawn);
    },
  });
  logButton.addEventListener("click", () => chart.toggleLogY());
  return chart;
}

/** The panel of a trick (or of the ranks), created, and its section shown, on first need. */
function panelChart(state, key) {
  if (state.panels.has(key)) return state.panels.get(key);
  const panel = PANELS.find((item) => item.key === key);
  const section = panel.section || "tricks";
  const container = document.getElementById(`${section}-panels`);
  const warmup = panel.warmup ? warmupOf(state.run) : null;
  const chart = card(state, container, {
    id: `chart-${key}`,
    // Says "shaded" only when something is.
    title: warmup ? `${panel.title} (warmup shaded)` : panel.title,
    ytitle: panel.ytitle,
    mode: panel.mode,
    logy: panel.logy,
    style: panel.style,
    note: panel.note || (warmup ? () => `warmup: steps 0\u2026${warmup.steps} (from ${warmup.source})` : undefined),
    shapes: warmup ? [spanShape(0, warmup.steps)] : undefined,
    onDraw: (drawn) => panelDrawn(state, key, drawn),
  });
  if (FINDING_PANELS.has(key)) chart.setFindings(stepMarks(state.findings));
  // Keep the cards in PANELS order whatever order their series arrive in.
  const order = PANELS.map((item) => item.key);
  const cards = [...container.children];
  cards.sort((a, b) => order.indexOf(a.id.slice(5)) - order.indexOf(b.id.slice(5)));
  container.replaceChildren(...cards);
  document.getElementById(`${section}-section`).hidden = false;
  state.panels.set(key, chart);
  return chart;
}

/** A card for a family of "other" metrics, created on first need. */
function otherChart(state, family) {
  if (state.other.has(family)) return state.other.get(family);
  document.getElementById("other-section").hidden = false;
  const chart = card(state, document.getElementById("other-charts"), {
    id: `chart-other-${slug(family)}`,
    title: family,
    ytitle: family,
    mode: "lines+markers",
  });
  state.other.set(family, chart);
  return chart;
}

/** The chart a classified series goes to (run-series.js classify), made on first need. */
export function chartFor(where, state) {
  if (where.kind === "overview") return state.charts.get(where.key);
  if (where.kind === "panel") return panelChart(state, where.key);
  if (where.kind === "other") return otherChart(state, where.family);
  return null;
}
