// The runs page: a filterable, sortable table of runs that refreshes itself (live status, live
// durations), with chosen config and summary columns, a sparkline of each run's main metric,
// project grouping, and a selection (by hand or every run the filters match) to compare.

import { api } from "./api.js";
import { ColumnPicker } from "./column-picker.js";
import { differingKeys, nameParts } from "./config-keys.js";
import { clearError, el, showError } from "./dom.js";
import { filtersFromUrl, filtersToUrl, matches, readFilters, serverParams, sortRuns } from "./run-filters.js";
import {
  availableColumns,
  durationSeconds,
  formatDuration,
  loadView,
  mainNames,
  parseColumn,
  saveView,
} from "./run-columns.js";
import { groupRow, headerRow, runRow, tableColumns } from "./runs-table.js";
import { sparkline } from "./sparkline.js";

const REFRESH_MS = 3000;
const LIMIT = 100;
const SPARK_POINTS = 48;
const MAX_COMPARE = 20; // what /compare/series reads at once

const controls = {
  project: document.getElementById("filter-project"),
  status: document.getElementById("filter-status"),
  tag: document.getElementById("filter-tag"),
  config: document.getElementById("filter-config"),
  metric: document.getElementById("filter-metric"),
  sort: document.getElementById("sort-key"),
  sortDir: document.getElementById("sort-dir"),
  group: document.getElementById("group-projects"),
};
const compareButton = document.getElementById("compare-button");
const mainInput = document.getElementById("main-metric");
const knownProjects = new Set();
const sortKeys = new Set();
const state = {
  selected: new Set(),
  shown: [], // the runs in the table, in order
  byId: new Map(),
  view: { columns: [], main: "" },
  viewProject: null,
  sparklines: new Map(), // run id -> the /sparklines answer for it
  sparkKeys: new Map(), // run id -> what that answer was read for (names, last step)
  metricNames: new Set(), // the series the main metric can be
  inFlight: false,
  pending: false,
};
const picker = new ColumnPicker(document.getElementById("column-picker"), (key, on) => {
  const columns = state.view.columns.filter((item) => item !== key);
  if (on) columns.push(key);
  setView({ ...state.view, columns });
});
window.__trickscope = { state };

function setView(view) {
  state.view = view;
  saveView(state.viewProject ?? "", view);
  refresh();
}

function updateProjectOptions(selectedProject) {
  const projects = [...knownProjects].sort((a, b) => a.localeCompare(b));
  const current = [...controls.project.options].slice(1).map((option) => option.value);
  if (current.length !== projects.length || current.some((p, i) => p !== projects[i])) {
    controls.project.replaceChildren(
      el("option", { text: "all projects", attrs: { value: "" } }),
      ...projects.map((project) => el("option", { text: project, attrs: { value: project } })),
    );
  }
  controls.project.value = selectedProject;
}

const FIXED_SORTS = [
  ["created_at", "started"],
  ["name", "name"],
  ["status", "status"],
  ["project", "project"],
  ["duration", "duration"],
  ["step", "step"],
  ["loss", "main metric"],
];

/** Give a <select> or <datalist> these [value, text] options (only when they changed). */
function replaceOptions(list, pairs, value) {
  const current = [...list.options].map((option) => option.value);
  if (current.length !== pairs.length || current.some((v, i) => v !== pairs[i][0])) {
    list.replaceChildren(...pairs.map(([key, text]) => el("option", { text, attrs: { value: key } })));
  }
  if (value !== undefined) list.value = value;
}

function updateSortOptions(selectedKey) {
  sortKeys.add(selectedKey);
  const extra = [...sortKeys].filter((key) => !FIXED_SORTS.some(([fixed]) => fixed === key)).sort();
  replaceOptions(controls.sort, [...FIXED_SORTS, ...extra.map((key) => [key, key])], selectedKey);
}

function setSortDir(desc) {
  controls.sortDir.dataset.dir = desc ? "desc" : "asc";
  controls.sortDir.textContent = desc ? "\u2193 desc" : "\u2191 asc";
}

function sortBy(key) {
  if (controls.sort.value === key) setSortDir(controls.sortDir.dataset.dir !== "desc");
  else setSortDir(key === "created_at" || key === "duration" || key === "step");
  updateSortOptions(key);
  refresh();
}

function updateSelection() {
  const count = state.selected.size;
  compareButton.disabled = count < 2 || count > MAX_COMPARE;
  document.getElementById("select-none").hidden = count === 0;
  let note = "select two or more runs to compare them";
  if (count > MAX_COMPARE) note = `${count} selected: compare takes up to ${MAX_COMPARE} runs`;
  else if (count) note = `${count} selected`;
  document.getElementById("selected-note").textContent = note;
  const matching = state.shown.length;
  document.getElementById("select-all").textContent = `Select all matching (${matching})`;
}

function selectRun(runId, on) {
  if (on) state.selected.add(runId);
  else state.selected.delete(runId);
  updateSelection();
}

function filterByColumn(key) {
  const { kind, name } = parseColumn(key);
  const input = kind === "config" ? controls.config : controls.metric;
  input.value = kind === "config" ? `${name}:` : `${name}<`;
  input.focus();
}

function render(runs, anyRuns, filters) {
  const columns = tableColumns(state.view, filters.sort.key);
  const actions = {
    onSort: sortBy,
    onRemove: (key) => setView({ ...state.view, columns: state.view.columns.filter((item) => item !== key) }),
    onFilter: filterByColumn,
  };
  document.getElementById("runs-head").replaceChildren(headerRow(columns, filters.sort, actions));
  // The config keys that differ among the runs in view name them (e.g. "lr=0.01 batch=64").
  const keys = differingKeys(runs.map((run) => run.config));
  const context = {
    columns,
    view: state.view,
    nameParts: (run) => nameParts(run.config, keys),
    selected: state.selected,
    sparklines: state.sparklines,
    onSelect: selectRun,
    now: Date.now(),
  };
  const rows = [];
  if (filters.group) {
    const projects = [...new Set(runs.map((run) => run.project))].sort((a, b) => a.localeCompare(b));
    for (const project of projects) {
      const members = runs.filter((run) => run.project === project);
      rows.push(groupRow(project, members.length, columns.length));
      rows.push(...members.map((run) => runRow(run, context)));
    }
  } else {
    rows.push(...runs.map((run) => runRow(run, context)));
  }
  document.getElementById("runs-body").replaceChildren(...rows);
  document.getElementById("runs-table").hidden = runs.length === 0;
  document.getElementById("empty-state").hidden = anyRuns;
  document.getElementById("no-match").hidden = !anyRuns || runs.length > 0;
}

/** The main-metric box suggests the runs' series (a datalist: typing narrows it). */
function updateMainOptions(runs) {
  const names = [...new Set(runs.flatMap((run) => Object.keys(run.latest || {})))].sort();
  state.metricNames = new Set(names);
  const list = document.getElementById("main-metric-names");
  replaceOptions(list, names.map((name) => [name, name]));
  if (document.activeElement !== mainInput) mainInput.value = state.view.main;
}

/** Read the sparklines of the runs whose main series may have changed, in batched requests. */
async function refreshSparklines(runs) {
  const names = mainNames(state.view.main);
  const wanted = (run) => `${names.join("\n")}|${run.last_step}|${run.status}`;
  const stale = runs.filter((run) => state.sparkKeys.get(run.id) !== wanted(run));
  if (!stale.length) return;
  for (let at = 0; at < stale.length; at += LIMIT) {
    const part = stale.slice(at, at + LIMIT);
    const answer = await api.sparklines(part.map((run) => run.id), names, SPARK_POINTS);
    for (const line of answer.runs) state.sparklines.set(line.run_id, line);
    for (const run of part) state.sparkKeys.set(run.id, wanted(run));
  }
  for (const run of stale) {
    const cell = document.querySelector(`#runs-body tr[data-run-id="${CSS.escape(run.id)}"] td[data-col="main"]`);
    const line = state.sparklines.get(run.id);
    if (!cell) continue;
    const old = cell.querySelector("svg.sparkline");
    if (old) old.remove();
    if (line && line.name) cell.prepend(sparkline(line));
  }
}

async function refresh() {
  if (state.inFlight) {
    state.pending = true;
    return;
  }
  state.inFlight = true;
  try {
    const filters = readFilters(controls);
    if (state.viewProject !== filters.project) {
      state.viewProject = filters.project;
      state.view = loadView(filters.project);
    }
    filtersToUrl(filters, controls);
    document.getElementById("refresh-note").textContent = filters.problems.join("; ");
    const params = serverParams(filters, LIMIT);
    const filtered = Object.entries(params).some(
      ([key, value]) => key !== "limit" && value && !(key === "sort" && value === "-created_at"),
    );
    // The unfiltered page feeds the project list, the sort keys and the column picker.
    const [all, page] = await Promise.all([api.runs({ limit: LIMIT }), filtered ? api.runs(params) : null]);
    const allRuns = all.runs || [];
    for (const run of allRuns) if (run.project) knownProjects.add(run.project);
    if (filters.project) knownProjects.add(filters.project);
    updateProjectOptions(filters.project);
    const offered = availableColumns(allRuns);
    for (const { key } of offered) if (/^(config|metric):/.test(key)) sortKeys.add(key);
    for (const key of state.view.columns) sortKeys.add(key);
    updateSortOptions(filters.sort.key);
    picker.update(offered, state.view.columns);
    updateMainOptions(allRuns);
    const listed = ((page || all).runs || []).filter((run) => matches(run, filters));
    const runs = sortRuns(listed, filters.sort, state.view.main);
    state.shown = runs;
    state.byId = new Map(runs.map((run) => [run.id, run]));
    render(runs, allRuns.length > 0, filters);
    updateSelection();
    if (!filters.problems.length) {
      document.getElementById("refresh-note").textContent = `updated ${new Date().toLocaleTimeString()}`;
    }
    clearError();
    document.body.dataset.loaded = "true";
    await refreshSparklines(runs);
    document.body.dataset.sparklines = "true";
  } catch (error) {
    showError(`Could not load runs: ${error.message}`);
  } finally {
    state.inFlight = false;
    if (state.pending) {
      state.pending = false;
      refresh();
    }
  }
}

/** Advance the durations of running runs every second, between table refreshes. */
function tickDurations() {
  const now = Date.now();
  for (const cell of document.querySelectorAll('#runs-body td[data-col="duration"][data-live]')) {
    const run = state.byId.get(cell.closest("tr").dataset.runId);
    if (run) cell.textContent = formatDuration(durationSeconds(run, now));
  }
}

function start() {
  const initial = filtersFromUrl(controls);
  knownProjects.add(initial.project);
  knownProjects.delete("");
  updateProjectOptions(initial.project);
  updateSortOptions(initial.sort.key);
  setSortDir(initial.sort.desc);
  for (const control of [controls.project, controls.status, controls.sort, controls.group]) {
    control.addEventListener("change", refresh);
  }
  let typing = null;
  for (const input of [controls.tag, controls.config, controls.metric]) {
    input.addEventListener("input", () => {
      window.clearTimeout(typing);
      typing = window.setTimeout(refresh, 300);
    });
  }
  controls.sortDir.addEventListener("click", () => {
    setSortDir(controls.sortDir.dataset.dir !== "desc");
    refresh();
  });
  // A name the runs have, or empty for the automatic choice; anything else waits for more typing.
  mainInput.addEventListener("input", () => {
    const name = mainInput.value.trim();
    if ((name === "" || state.metricNames.has(name)) && name !== state.view.main) {
      setView({ ...state.view, main: name });
    }
  });
  document.getElementById("select-all").addEventListener("click", () => {
    for (const run of state.shown) state.selected.add(run.id);
    for (const box of document.querySelectorAll("input.select-run")) box.checked = true;
    updateSelection();
  });
  document.getElementById("select-none").addEventListener("click", () => {
    state.selected.clear();
    for (const box of document.querySelectorAll("input.select-run")) box.checked = false;
    updateSelection();
  });
  compareButton.addEventListener("click", () => {
    const ids = [...state.selected];
    window.location.assign(`/compare?runs=${ids.map(encodeURIComponent).join(",")}`);
  });
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
  updateSelection();
  refresh();
  window.setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
  window.setInterval(tickDurations, 1000);
}

start();
