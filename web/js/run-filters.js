// The runs page's filters and sort: read from the filter bar, sent to the server as the
// run-history query parameters, applied again to the answer (the page is right whether or not
// the server applied them), and kept in the URL.

import { toNumber } from "./api.js";
import { flatten } from "./config-keys.js";
import { durationSeconds, mainValue } from "./run-columns.js";

const METRIC_RE = /^(.+?)(<=|>=|<|>|=)\s*(\S+)$/;
// Sorts the server runs; the others (project, loss, duration, step, min/max) sort the page here.
const SERVER_SORTS = new Set(["created_at", "name", "status"]);

function parseScalar(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The filters as typed in `controls`, parsed; `problems` lists the ones that cannot be read. */
export function readFilters(controls) {
  const tags = controls.tag.value
    .split(",")
    .map((tag) => tag.trim())
    .filter(Boolean);
  const problems = [];
  let config = null;
  const configText = controls.config.value.trim();
  if (configText) {
    const at = configText.indexOf(":");
    if (at > 0) config = { key: configText.slice(0, at).trim(), value: configText.slice(at + 1).trim() };
    else problems.push("config filter: write key:value");
  }
  let metric = null;
  const metricText = controls.metric.value.trim();
  if (metricText) {
    const match = METRIC_RE.exec(metricText);
    if (match && Number.isFinite(Number(match[3]))) {
      metric = { name: match[1].trim(), op: match[2], value: Number(match[3]) };
    } else {
      problems.push("metric filter: write name<op>number, e.g. loss/train<0.5");
    }
  }
  return {
    project: controls.project.value,
    status: controls.status.value,
    tags,
    config,
    metric,
    sort: { key: controls.sort.value || "created_at", desc: controls.sortDir.dataset.dir === "desc" },
    group: controls.group.checked,
    problems,
  };
}

/** The run-history query parameters of the filters. */
export function serverParams(filters, limit) {
  const params = { project: filters.project, status: filters.status, limit };
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

/** True when the run passes the filters. */
export function matches(run, filters) {
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
  // The server filtered on the series too, and its listing carries the series' latest value in
  // `latest` (per-layer statistics included); a run answered without it stands as answered.
  if (filters.metric && filters.metric.name in (run.latest || {})) {
    const latest = run.latest;
    const value = toNumber(latest[filters.metric.name]);
    if (value === null || Number.isNaN(value)) return false;
    if (!compareOp(value, filters.metric.op, filters.metric.value)) return false;
  }
  return true;
}

/**
 * The value a run is sorted by under `key` (undefined: the run lacks it and goes last).
 * `main` names the main-metric candidates (see run_columns.mainValue).
 */
export function sortValue(run, key, main) {
  if (key === "created_at") return run.created_at || "";
  if (key === "name") return run.name || "";
  if (key === "status") return run.status || "";
  if (key === "project") return run.project || "";
  if (key === "loss") return toNumber(mainValue(run, main).value);
  if (key === "duration") return durationSeconds(run, Date.now());
  if (key === "step") return run.last_step ?? undefined;
  const at = key.indexOf(":");
  const kind = key.slice(0, at);
  const name = key.slice(at + 1);
  if (kind === "config") return flatten(run.config || {})[name];
  if (kind === "metric") return toNumber((run.latest || {})[name]);
  if (kind === "min" || kind === "max") {
    const range = (run.summary || {})[name];
    return range ? toNumber(range[kind]) : undefined;
  }
  return undefined;
}

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

/** The runs in the sort's order; runs without the value go last, in their given order. */
export function sortRuns(runs, { key, desc }, main) {
  const keyed = runs.map((run, index) => ({ run, index, value: sortValue(run, key, main) }));
  keyed.sort((x, y) => {
    const xMissing = x.value === undefined || x.value === null || Number.isNaN(x.value);
    const yMissing = y.value === undefined || y.value === null || Number.isNaN(y.value);
    if (xMissing || yMissing) return xMissing === yMissing ? x.index - y.index : xMissing ? 1 : -1;
    const order = compareValues(x.value, y.value);
    return (desc ? -order : order) || x.index - y.index;
  });
  return keyed.map((item) => item.run);
}

/** Fill the controls from the URL; returns the sort as {key, desc}. */
export function filtersFromUrl(controls) {
  const params = new URLSearchParams(window.location.search);
  controls.status.value = params.get("status") || "";
  controls.tag.value = params.getAll("tag").join(", ");
  controls.config.value = params.get("config") || "";
  controls.metric.value = params.get("metric") || "";
  controls.group.checked = params.get("group") === "project";
  const sort = params.get("sort") || "-created_at";
  const desc = sort.startsWith("-");
  return { project: params.get("project") || "", sort: { key: desc ? sort.slice(1) : sort, desc } };
}

/** Keep the filters in the URL (replaceState: the back button leaves the page). */
export function filtersToUrl(filters, controls) {
  const params = new URLSearchParams();
  if (filters.project) params.set("project", filters.project);
  if (filters.status) params.set("status", filters.status);
  for (const tag of filters.tags) params.append("tag", tag);
  if (controls.config.value.trim()) params.set("config", controls.config.value.trim());
  if (controls.metric.value.trim()) params.set("metric", controls.metric.value.trim());
  const sort = `${filters.sort.desc ? "-" : ""}${filters.sort.key}`;
  if (sort !== "-created_at") params.set("sort", sort);
  if (filters.group) params.set("group", "project");
  const qs = params.toString();
  window.history.replaceState(null, "", qs ? `?${qs}` : window.location.pathname);
}
