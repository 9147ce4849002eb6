// The runs page: a filterable, sortable table of runs that refreshes itself (live status), with
// project grouping and a selection to compare. Filters and sort go to the server as the
// run-history query parameters, and the same rules are applied to the answer here as well, so
// the page is right whether or not the server applied them.

import { api, formatTime, formatValue, lastLoss, toNumber } from "./api.js";
import { clearError, el, showError } from "./dom.js";
import { runBadge } from "./liveness.js";

const REFRESH_MS = 3000;
const LIMIT = 100;
const SERVER_SORTS = new Set(["created_at", "name", "status"]);
const METRIC_RE = /^(.+?)(<=|>=|<|>|=)\s*(\S+)$/;

const projectSelect = document.getElementById("filter-project");
const statusSelect = document.getElementById("filter-status");
const tagInput = document.getElementById("filter-tag");
const configInput = document.getElementById("filter-config");
const metricInput = document.getElementById("filter-metric");
const sortSelect = document.getElementById("sort-key");
const sortDir = document.getElementById("sort-dir");
const groupBox = document.getElementById("group-projects");
const compareButton = document.getElementById("compare-button");
const knownProjects = new Set();
const sortKeys = new Set();
const selected = new Set();
let inFlight = false;
let pending = false;

/** A nested config flattened to dotted keys (scalars and arrays are leaves). */
function flatten(object, prefix = "", out = {}) {
  if (object && typeof object === "object" && !Array.isArray(object)) {
    for (const [key, value] of Object.entries(object)) flatten(value, prefix ? `${prefix}.${key}` : key, out);
  } else if (prefix) {
    out[prefix] = object;
  }
  return out;
}

function parseScalar(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The filters as typed, parsed; `problems` lists the ones that cannot be read. */
function readFilters() {
  const tags = tagInput.value
    .split(",")
    .map((tag) => tag.trim())
    .filter(Boolean);
  const problems = [];
  let config = null;
  const configText = configInput.value.trim();
  if (configText) {
    const at = configText.indexOf(":");
    if (at > 0) config = { key: configText.slice(0, at).trim(), value: configText.slice(at + 1).trim() };
    else problems.push("config filter: write key:value");
  }
  let metric = null;
  const metricText = metricInput.value.trim();
  if (metricText) {
    const match = METRIC_RE.exec(metricText);
    if (match && Number.isFinite(Number(match[3]))) {
      metric = { name: match[1].trim(), op: match[2], value: Number(match[3]) };
    } else {
      problems.push("metric filter: write name<op>number, e.g. loss/train<0.5");
    }
  }
  const key = sortSelect.value || "created_at";
  const desc = sortDir.dataset.dir === "desc";
  return {
    project: projectSelect.value,
    status: statusSelect.value,
    tags,
    config,
    metric,
    sort: { key, desc },
    group: groupBox.checked,
    problems,
  };
}

function serverParams(filters) {
  const params = { project: filters.project, status: filters.status, limit: LIMIT };
  if (filters.tags.length) params.tag = filters.tags;
  if (filters.config) params.config = `${filters.config.key}:${filters.config.value}`;
  if (filters.metric) params.metric = `${filters.metric.name}${filters.metric.op}${filters.metric.value}`;
  const { key, desc } = filters.sort;
  if (SERVER_SORTS.has(key) || key.startsWith("config:") || key.startsWith("metric:")) {
    params.sort = `${desc ? "-" : ""}${key}`;
  }
  return params;
}

function compareOp(left, op, right) {
  switch (op) {
    case "<":
      return left < right;
    case "<=":
      return left <= right;
    case ">":
      return left > right;
    case ">=":
      return left >= right;
    default:
      return left === right;
  }
}

function matches(run, filters) {
  if (filters.project && run.project !== filters.project) return false;
  if (filters.status && run.status !== filters.status) return false;
  const tags = run.tags || [];
  if (!filters.tags.every((tag) => tags.includes(tag))) return false;
  if (filters.config) {
    const flat = flatten(run.config || {});
    if (!(filters.config.key in flat)) return false;
    const wanted = parseScalar(filters.config.value);
    if (JSON.stringify(flat[filters.config.key]) !== JSON.stringify(wanted)) return false;
  }
  if (filters.metric) {
    const latest = run.latest || {};
    if (!(filters.metric.name in latest)) return false;
    const value = toNumber(latest[filters.metric.name]);
    if (value === null || Number.isNaN(value)) return false;
    if (!compareOp(value, filters.metric.op, filters.metric.value)) return false;
  }
  return true;
}

/** The value a run is sorted by (undefined: the run lacks it and goes last). */
function sortValue(run, key) {
  if (key === "created_at") return run.created_at || "";
  if (key === "name") return run.name || "";
  if (key === "status") return run.status || "";
  if (key === "project") return run.project || "";
  if (key === "loss") return toNumber(lastLoss(run.latest));
  if (key.startsWith("config:")) return flatten(run.config || {})[key.slice(7)];
  if (key.startsWith("metric:")) return toNumber((run.latest || {})[key.slice(7)]);
  return undefined;
}

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

function sortRuns(runs, { key, desc }) {
  const keyed = runs.map((run, index) => ({ run, index, value: sortValue(run, key) }));
  keyed.sort((x, y) => {
    const xMissing = x.value === undefined || x.value === null || Number.isNaN(x.value);
    const yMissing = y.value === undefined || y.value === null || Number.isNaN(y.value);
    if (xMissing || yMissing) return xMissing === yMissing ? x.index - y.index : xMissing ? 1 : -1;
    const order = compareValues(x.value, y.value);
    return (desc ? -order : order) || x.index - y.index;
  });
  return keyed.map((item) => item.run);
}

function filtersFromUrl() {
  const params = new URLSearchParams(window.location.search);
  projectSelect.value = params.get("project") || "";
  if (params.get("project")) knownProjects.add(params.get("project"));
  statusSelect.value = params.get("status") || "";
  tagInput.value = params.getAll("tag").join(", ");
  configInput.value = params.get("config") || "";
  metricInput.value = params.get("metric") || "";
  const sort = params.get("sort") || "-created_at";
  const desc = sort.startsWith("-");
  const key = desc ? sort.slice(1) : sort;
  sortKeys.add(key);
  updateSortOptions(key);
  setSortDir(desc);
  groupBox.checked = params.get("group") === "project";
}

function filtersToUrl(filters) {
  const params = new URLSearchParams();
  if (filters.project) params.set("project", filters.project);
  if (filters.status) params.set("status", filters.status);
  for (const tag of filters.tags) params.append("tag", tag);
  if (configInput.value.trim()) params.set("config", configInput.value.trim());
  if (metricInput.value.trim()) params.set("metric", metricInput.value.trim());
  const sort = `${filters.sort.desc ? "-" : ""}${filters.sort.key}`;
  if (sort !== "-created_at") params.set("sort", sort);
  if (filters.group) params.set("group", "project");
  const qs = params.toString();
  window.history.replaceState(null, "", qs ? `?${qs}` : window.location.pathname);
}

function updateProjectOptions(selectedProject) {
  const projects = [...knownProjects].sort((a, b) => a.localeCompare(b));
  const current = [...projectSelect.options].slice(1).map((option) => option.value);
  if (current.length === projects.length && current.every((p, i) => p === projects[i])) return;
  projectSelect.replaceChildren(
    el("option", { text: "all projects", attrs: { value: "" } }),
    ...projects.map((project) => el("option", { text: project, attrs: { value: project } })),
  );
  projectSelect.value = selectedProject;
}

const FIXED_SORTS = [
  ["created_at", "started"],
  ["name", "name"],
  ["status", "status"],
  ["project", "project"],
  ["loss", "last loss"],
];

function updateSortOptions(selectedKey) {
  const extra = [...sortKeys].filter((key) => !FIXED_SORTS.some(([fixed]) => fixed === key)).sort();
  const wanted = [...FIXED_SORTS.map(([key]) => key), ...extra];
  const current = [...sortSelect.options].map((option) => option.value);
  if (current.length !== wanted.length || current.some((value, i) => value !== wanted[i])) {
    sortSelect.replaceChildren(
      ...FIXED_SORTS.map(([key, text]) => el("option", { text, attrs: { value: key } })),
      ...extra.map((key) => el("option", { text: key, attrs: { value: key } })),
    );
  }
  sortSelect.value = selectedKey;
}

function setSortDir(desc) {
  sortDir.dataset.dir = desc ? "desc" : "asc";
  sortDir.textContent = desc ? "\u2193 desc" : "\u2191 asc";
}

function updateSelection() {
  compareButton.disabled = selected.size < 2;
  document.getElementById("selected-note").textContent = selected.size
    ? `${selected.size} selected`
    : "select two or more runs to compare them";
}

function runRow(run, sortKey) {
  const href = `/runs/${encodeURIComponent(run.id)}`;
  const loss = lastLoss(run.latest);
  const box = el("input", { className: "select-run", attrs: { type: "checkbox", "aria-label": "compare" } });
  box.dataset.runId = run.id;
  box.checked = selected.has(run.id);
  box.addEventListener("change", () => {
    if (box.checked) selected.add(run.id);
    else selected.delete(run.id);
    updateSelection();
  });
  const extra = sortKey.startsWith("config:") || sortKey.startsWith("metric:");
  const sortCell = extra
    ? el("td", { className: "num mono sort-value", text: sortCellText(sortValue(run, sortKey), sortKey) })
    : null;
  return el("tr", { dataset: { runId: run.id, status: run.status || "" } }, [
    el("td", { text: run.project }),
    el("td", {}, [el("a", { href, text: run.name || run.id, className: "run-link" })]),
    el("td", {}, [runBadge(run)]),
    el("td", { text: formatTime(run.started_at || run.created_at) }),
    el("td", { className: "num mono", text: loss === undefined ? "\u2014" : formatValue(loss) }),
    sortCell,
    el("td", { className: "select-col" }, [box]),
  ]);
}

function sortCellText(value, key) {
  if (value === undefined || value === null) return "\u2014";
  if (key.startsWith("metric:")) return formatValue(value);
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function render(runs, anyRuns, filters) {
  const table = document.getElementById("runs-table");
  const body = document.getElementById("runs-body");
  const key = filters.sort.key;
  const extra = key.startsWith("config:") || key.startsWith("metric:");
  const sortCol = document.getElementById("sort-col");
  sortCol.hidden = !extra;
  sortCol.textContent = extra ? key.slice(7) : "";
  const rows = [];
  if (filters.group) {
    const projects = [...new Set(runs.map((run) => run.project))].sort((a, b) => a.localeCompare(b));
    for (const project of projects) {
      const members = runs.filter((run) => run.project === project);
      rows.push(
        el("tr", { className: "group-row", dataset: { project } }, [
          el("th", { text: `${project} (${members.length})`, attrs: { colspan: extra ? "7" : "6" } }),
        ]),
      );
      rows.push(...members.map((run) => runRow(run, key)));
    }
  } else {
    rows.push(...runs.map((run) => runRow(run, key)));
  }
  body.replaceChildren(...rows);
  table.hidden = runs.length === 0;
  document.getElementById("empty-state").hidden = anyRuns;
  document.getElementById("no-match").hidden = !anyRuns || runs.length > 0;
  document.body.dataset.loaded = "true";
}

function learnSortKeys(runs) {
  for (const run of runs) {
    for (const [key, value] of Object.entries(flatten(run.config || {}))) {
      if (value === null || typeof value !== "object") sortKeys.add(`config:${key}`);
    }
    for (const name of Object.keys(run.latest || {})) sortKeys.add(`metric:${name}`);
  }
}

async function refresh() {
  if (inFlight) {
    pending = true;
    return;
  }
  inFlight = true;
  try {
    const filters = readFilters();
    filtersToUrl(filters);
    document.getElementById("refresh-note").textContent = filters.problems.join("; ");
    const params = serverParams(filters);
    const filtered = Object.entries(params).some(
      ([key, value]) => key !== "limit" && value && !(key === "sort" && value === "-created_at"),
    );
    // The unfiltered page feeds the project list and the sort keys; the filtered one the table.
    const [all, page] = await Promise.all([
      api.runs({ limit: LIMIT }),
      filtered ? api.runs(params) : null,
    ]);
    for (const run of all.runs || []) if (run.project) knownProjects.add(run.project);
    if (filters.project) knownProjects.add(filters.project);
    updateProjectOptions(filters.project);
    learnSortKeys(all.runs || []);
    updateSortOptions(filters.sort.key);
    const runs = sortRuns(
      ((page || all).runs || []).filter((run) => matches(run, filters)),
      filters.sort,
    );
    render(runs, (all.runs || []).length > 0, filters);
    if (!filters.problems.length) {
      document.getElementById("refresh-note").textContent = `updated ${new Date().toLocaleTimeString()}`;
    }
    clearError();
  } catch (error) {
    showError(`Could not load runs: ${error.message}`);
  } finally {
    inFlight = false;
    if (pending) {
      pending = false;
      refresh();
    }
  }
}

function start() {
  filtersFromUrl();
  updateProjectOptions(projectSelect.value);
  for (const control of [projectSelect, statusSelect, sortSelect, groupBox]) {
    control.addEventListener("change", refresh);
  }
  let typing = null;
  for (const input of [tagInput, configInput, metricInput]) {
    input.addEventListener("input", () => {
      window.clearTimeout(typing);
      typing = window.setTimeout(refresh, 300);
    });
  }
  sortDir.addEventListener("click", () => {
    setSortDir(sortDir.dataset.dir !== "desc");
    refresh();
  });
  for (const button of document.querySelectorAll("button.th-sort")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      if (sortSelect.value === key) setSortDir(sortDir.dataset.dir !== "desc");
      else setSortDir(key === "created_at");
      sortKeys.add(key);
      updateSortOptions(key);
      refresh();
    });
  }
  compareButton.addEventListener("click", () => {
    const ids = [...selected];
    window.location.assign(`/compare?runs=${ids.map(encodeURIComponent).join(",")}`);
  });
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
  updateSelection();
  refresh();
  window.setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
}

start();
