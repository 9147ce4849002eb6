// The compare page: /compare?runs=a,b[,...][&panel=name...][&smooth=0.6]. A grid of the common
// charts (loss, eval metrics, LR, global gradient norm) of the selected runs, one colour per run
// on every chart, EMA smoothing applied to every panel at once, more charts added by searching
// the series names, and the config keys that differ kept on top.

import { api } from "./api.js";
import { plotlyReady } from "./charts.js";
import { ComparePanel } from "./compare-chart.js";
import { defaultPanels, orderedNames, searchNames } from "./compare-series.js";
import { configDifferences, valueText } from "./config-keys.js";
import { clearError, el, showError } from "./dom.js";
import { runBadge } from "./liveness.js";
import { runColor } from "./run-colors.js";

const DEFAULT_SMOOTHING = 0.6;
const LIVE_MS = 3000;

const state = { runs: [], names: [], panels: [], smoothing: DEFAULT_SMOOTHING };
window.__trickscope = { state };

function readUrl() {
  const params = new URLSearchParams(window.location.search);
  const ids = (params.get("runs") || "")
    .split(",")
    .map((id) => id.trim())
    .filter(Boolean);
  const panels = params.getAll("panel");
  if (params.get("name")) panels.push(params.get("name")); // the one-series page's links
  const smooth = Number.parseFloat(params.get("smooth"));
  return {
    ids: [...new Set(ids)],
    panels: [...new Set(panels)],
    smoothing: Number.isFinite(smooth) ? Math.min(Math.max(smooth, 0), 0.99) : DEFAULT_SMOOTHING,
  };
}

function writeUrl() {
  const params = new URLSearchParams();
  params.set("runs", state.runs.map((run) => run.id).join(","));
  for (const panel of state.panels) params.append("panel", panel.name);
  if (state.smoothing !== DEFAULT_SMOOTHING) params.set("smooth", String(state.smoothing));
  window.history.replaceState(null, "", `?${params.toString().replace(/%2C/g, ",")}`);
}

function label(run) {
  return `${run.name || run.id} (${run.id.slice(0, 8)})`;
}

function swatch(color) {
  const node = el("span", { className: "swatch", attrs: { "aria-hidden": "true" } });
  node.style.backgroundColor = color; // CSSOM, not a style attribute: the CSP allows it
  return node;
}

function renderRuns(runs) {
  document.getElementById("compare-runs").replaceChildren(
    ...runs.map((run) =>
      el("li", { dataset: { runId: run.id } }, [
        swatch(run.color),
        el("a", { href: `/runs/${encodeURIComponent(run.id)}`, text: run.name || run.id }),
        " ",
        el("span", { className: "muted small-text", text: `${run.project} \u00b7 ${run.id.slice(0, 8)}` }),
        " ",
        runBadge(run),
      ]),
    ),
  );
}

const DIFF_CHARS = 160;

/** A value of the diff table; a long one (a list of param groups) is cut, whole in its tooltip. */
function diffCell(value) {
  const text = valueText(value);
  const cell = el("td", { className: value === undefined ? "muted" : "" });
  if (text.length > DIFF_CHARS) {
    cell.textContent = `${text.slice(0, DIFF_CHARS - 1)}\u2026`;
    cell.title = text;
  } else {
    cell.textContent = text;
  }
  return cell;
}

function renderDiff(runs) {
  const rows = configDifferences(runs.map((run) => run.config));
  const head = el("tr", {}, [
    el("th", { text: "key" }),
    ...runs.map((run) => el("th", { attrs: { scope: "col" } }, [swatch(run.color), label(run)])),
  ]);
  const body = rows.map((row) =>
    el("tr", { dataset: { key: row.key } }, [
      el("th", { text: row.key, attrs: { scope: "row" } }),
      ...row.values.map((value) => diffCell(value)),
    ]),
  );
  document.getElementById("config-diff").replaceChildren(el("thead", {}, [head]), el("tbody", {}, body));
  document.getElementById("diff-note").textContent = rows.length
    ? `${rows.length} of the keys differ; equal keys are hidden`
    : "the configs are identical";
}

function removePanel(panel) {
  state.panels = state.panels.filter((item) => item !== panel);
  panel.destroy();
  writeUrl();
}

/** Add a panel for `name` (first in the grid), or bring its panel into view. */
function addPanel(name, { first = false } = {}) {
  const existing = state.panels.find((panel) => panel.name === name);
  if (existing) {
    existing.card.scrollIntoView({ block: "nearest" });
    return existing;
  }
  const panel = new ComparePanel(name, state.runs, state.smoothing, removePanel);
  const grid = document.getElementById("panels");
  if (first) {
    grid.prepend(panel.card);
    state.panels.unshift(panel);
  } else {
    grid.append(panel.card);
    state.panels.push(panel);
  }
  panel.load();
  writeUrl();
  return panel;
}

function setupSmoothing() {
  const input = document.getElementById("smoothing");
  const output = document.getElementById("smoothing-value");
  input.value = String(state.smoothing);
  output.textContent = state.smoothing.toFixed(2);
  let frame = null;
  input.addEventListener("input", () => {
    state.smoothing = Number(input.value);
    output.textContent = state.smoothing.toFixed(2);
    // One redraw per frame while the slider moves.
    if (frame === null) {
      frame = window.requestAnimationFrame(() => {
        frame = null;
        for (const panel of state.panels) panel.setSmoothing(state.smoothing);
        writeUrl();
      });
    }
  });
}

function setupSearch() {
  const input = document.getElementById("series-search");
  const list = document.getElementById("series-hits");
  const pick = (name) => {
    addPanel(name, { first: true });
    input.value = "";
    list.hidden = true;
    list.replaceChildren();
  };
  const show = () => {
    const hits = searchNames(state.names, input.value);
    list.replaceChildren(
      ...hits.map((name) => {
        const button = el("button", { className: "series-hit mono", text: name, attrs: { type: "button" } });
        button.addEventListener("click", () => pick(name));
        return el("li", {}, [button]);
      }),
    );
    list.hidden = !hits.length;
    document.getElementById("series-note").textContent =
      input.value.trim() && !hits.length ? "no series matches" : `${state.names.length} series`;
  };
  input.addEventListener("input", show);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      const first = list.querySelector("button.series-hit");
      if (first) pick(first.textContent);
    } else if (event.key === "Escape") {
      input.value = "";
      show();
    }
  });
  // A click elsewhere closes the list (it lies over the charts).
  document.addEventListener("click", (event) => {
    if (!event.target.closest(".series-search")) list.hidden = true;
  });
  document.getElementById("series-note").textContent = `${state.names.length} series`;
}

/** While some run trains, refresh its status and re-read every panel (one request each). */
async function followLive() {
  const running = state.runs.filter((run) => run.status === "running");
  if (!running.length || document.hidden) return;
  try {
    const fresh = await Promise.all(running.map((run) => api.run(run.id)));
    for (const run of fresh) Object.assign(state.runs.find((item) => item.id === run.id), run);
    renderRuns(state.runs);
    await Promise.all(state.panels.map((panel) => panel.reload()));
  } catch (error) {
    showError(`Could not refresh the runs: ${error.message}`);
  }
}

async function load() {
  const wanted = readUrl();
  state.smoothing = wanted.smoothing;
  if (!wanted.ids.length) {
    showError("Pick runs to compare on the runs page (or open /compare?runs=<id>,<id>).");
    document.body.dataset.loaded = "true";
    return;
  }
  let runs;
  let seriesLists;
  try {
    [runs, seriesLists] = await Promise.all([
      Promise.all(wanted.ids.map((id) => api.run(id))),
      Promise.all(wanted.ids.map((id) => api.series(id))),
    ]);
  } catch (error) {
    showError(`Could not load the runs: ${error.message}`);
    document.body.dataset.loaded = "true";
    return;
  }
  state.runs = runs.map((run, index) => ({ ...run, color: runColor(index), label: label(run) }));
  renderRuns(state.runs);
  renderDiff(state.runs);
  const layers = new Set(runs.flatMap((run) => run.layers || []));
  const all = new Set(seriesLists.flatMap((list) => (list.series || []).map((item) => item.name)));
  state.names = orderedNames(all, layers);
  setupSmoothing();
  setupSearch();
  const chosen = wanted.panels.filter((name) => all.has(name));
  await plotlyReady();
  for (const name of chosen.length ? chosen : defaultPanels(state.names, layers)) addPanel(name);
  await Promise.all(state.panels.map((panel) => panel.queue));
  const failed = state.panels.filter((panel) => panel.div.dataset.error);
  if (failed.length) {
    const names = failed.map((panel) => panel.name).join(", ");
    showError(`Could not load ${names}: ${failed[0].div.dataset.error}`);
  } else {
    clearError();
  }
  document.body.dataset.loaded = "true";
  window.setInterval(followLive, LIVE_MS);
}

load();
