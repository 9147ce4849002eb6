// The compare page: /compare?runs=a,b[,...][&name=series]. One series of several runs overlaid
// (one request to /compare/series), zoom re-reads the window, and the config keys that differ.

import { api } from "./api.js";
import { LineChart, plotlyReady, plotlyText } from "./charts.js";
import { clearError, el, showError } from "./dom.js";
import { runBadge } from "./liveness.js";

const POINTS = 2000;

const hooks = {};
window.__trickscope = hooks;

function idsFromUrl() {
  const params = new URLSearchParams(window.location.search);
  const ids = (params.get("runs") || "")
    .split(",")
    .map((id) => id.trim())
    .filter(Boolean);
  return { ids: [...new Set(ids)], name: params.get("name") || "" };
}

/** A nested config flattened to dotted keys; arrays and scalars are leaves. */
export function flatten(object, prefix = "", out = {}) {
  if (object && typeof object === "object" && !Array.isArray(object)) {
    const entries = Object.entries(object);
    if (!entries.length && prefix) out[prefix] = object;
    for (const [key, value] of entries) flatten(value, prefix ? `${prefix}.${key}` : key, out);
  } else if (prefix) {
    out[prefix] = object;
  }
  return out;
}

function valueText(value) {
  if (value === undefined) return "\u2014";
  if (value === null) return "null";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The keys whose values differ between the runs (a key missing from a run differs). */
export function configDifferences(configs) {
  const flat = configs.map((config) => flatten(config || {}));
  const keys = new Set(flat.flatMap((item) => Object.keys(item)));
  const rows = [];
  for (const key of [...keys].sort()) {
    const texts = flat.map((item) => (key in item ? JSON.stringify(item[key]) : undefined));
    if (texts.some((text) => text !== texts[0])) rows.push({ key, values: flat.map((item) => item[key]) });
  }
  return rows;
}

function label(run) {
  return `${run.name || run.id} (${run.id.slice(0, 8)})`;
}

function renderRuns(runs) {
  const list = document.getElementById("compare-runs");
  list.replaceChildren(
    ...runs.map((run) =>
      el("li", { dataset: { runId: run.id } }, [
        el("a", { href: `/runs/${encodeURIComponent(run.id)}`, text: run.name || run.id }),
        " ",
        el("span", { className: "muted small-text", text: `${run.project} · ${run.id.slice(0, 8)}` }),
        " ",
        runBadge(run),
      ]),
    ),
  );
}

function renderDiff(runs) {
  const table = document.getElementById("config-diff");
  const rows = configDifferences(runs.map((run) => run.config));
  const head = el("tr", {}, [
    el("th", { text: "key" }),
    ...runs.map((run) => el("th", { text: label(run), attrs: { scope: "col" } })),
  ]);
  const body = rows.map((row) =>
    el("tr", { dataset: { key: row.key } }, [
      el("th", { text: row.key, attrs: { scope: "row" } }),
      ...row.values.map((value) => el("td", { text: valueText(value), className: value === undefined ? "muted" : "" })),
    ]),
  );
  table.replaceChildren(el("thead", {}, [head]), el("tbody", {}, body));
  document.getElementById("diff-note").textContent = rows.length
    ? `${rows.length} of the keys differ; equal keys are hidden`
    : "the configs are identical";
}

function isLayerSeries(name, layers) {
  for (let at = name.indexOf("/"); at > 0; at = name.indexOf("/", at + 1)) {
    if (layers.has(name.slice(at + 1))) return true;
  }
  return false;
}

function defaultSeries(names) {
  for (const wanted of ["loss/train", "loss"]) if (names.includes(wanted)) return wanted;
  return names.find((name) => name.startsWith("loss")) || names[0] || "";
}

async function load() {
  const { ids, name: requested } = idsFromUrl();
  if (!ids.length) {
    showError("Pick runs to compare on the runs page (or open /compare?runs=<id>,<id>).");
    document.body.dataset.loaded = "true";
    return;
  }
  let runs;
  let seriesLists;
  try {
    [runs, seriesLists] = await Promise.all([
      Promise.all(ids.map((id) => api.run(id))),
      Promise.all(ids.map((id) => api.series(id))),
    ]);
  } catch (error) {
    showError(`Could not load the runs: ${error.message}`);
    document.body.dataset.loaded = "true";
    return;
  }
  renderRuns(runs);
  renderDiff(runs);
  const layers = new Set(runs.flatMap((run) => run.layers || []));
  const all = new Set(seriesLists.flatMap((list) => (list.series || []).map((item) => item.name)));
  // Run-level series first, then the per-layer ones; each group sorted.
  const names = [...all].sort((a, b) => {
    const la = isLayerSeries(a, layers);
    const lb = isLayerSeries(b, layers);
    return la === lb ? a.localeCompare(b) : la ? 1 : -1;
  });
  const byId = new Map(runs.map((run) => [run.id, run]));
  const state = { name: requested && all.has(requested) ? requested : defaultSeries(names), chart: null };
  hooks.state = state;

  const select = document.getElementById("compare-series");
  const filter = document.getElementById("series-filter");
  const fillOptions = () => {
    const needle = filter.value.trim().toLowerCase();
    const shown = names.filter((name) => !needle || name.toLowerCase().includes(needle) || name === state.name);
    select.replaceChildren(...shown.map((name) => el("option", { text: name, attrs: { value: name } })));
    select.value = state.name;
  };
  fillOptions();
  filter.addEventListener("input", fillOptions);

  await plotlyReady();
  const div = document.getElementById("chart-compare");

  const draw = async (name) => {
    state.name = name;
    document.getElementById("compare-title").textContent = name || "Series";
    const params = new URLSearchParams(window.location.search);
    params.set("name", name);
    window.history.replaceState(null, "", `?${params.toString()}`);
    if (state.chart) {
      state.chart.retired = true;
      window.Plotly.purge(div);
    }
    div.dataset.points = "0";
    const reads = new Map();
    const readWindow = (start, end) => {
      const key = `${start},${end}`;
      if (!reads.has(key)) reads.set(key, api.compare(ids, name, POINTS, start, end));
      return reads.get(key);
    };
    const chart = new LineChart(div, {
      ytitle: name,
      // Traces are keyed by run id; the legend shows the run's name.
      styleOf: (runId) => ({ name: plotlyText(label(byId.get(runId) || { id: runId })) }),
      fetchWindow: async (runId, start, end) => {
        const answer = await readWindow(start, end);
        reads.delete(`${start},${end}`); // a later zoom to the same window reads again
        return answer.runs.find((item) => item.run_id === runId);
      },
    });
    state.chart = chart;
    const first = readWindow(undefined, undefined);
    await chart.enqueue(async () => {
      const answer = await first;
      if (chart.retired) return;
      await chart.draw(answer.runs.map((item) => ({ ...item, name: item.run_id })));
    });
    div.dataset.name = name;
  };

  select.addEventListener("change", () => draw(select.value).catch((error) => showError(error.message)));
  document.getElementById("compare-logy").addEventListener("click", () => state.chart && state.chart.toggleLogY());
  try {
    await draw(state.name);
    clearError();
  } catch (error) {
    showError(`Could not load ${state.name}: ${error.message}`);
  }
  document.body.dataset.loaded = "true";
}

load();
