// The runs table's columns: the main metric, duration and step of a run, the optional config and
// summary columns, and the choice of columns remembered per project in localStorage.

import { formatValue } from "./api.js";
import { flatten, valueText } from "./config-keys.js";

/** The main metric when the user chose none: the first of these a run has. */
export const MAIN_CANDIDATES = ["loss/train", "train/loss", "loss", "train_loss"];

/** The series names tried, in order, for the main metric (`chosen` "" means automatic). */
export function mainNames(chosen) {
  return chosen ? [chosen] : MAIN_CANDIDATES;
}

/** The run's main metric: {name, value} of the first name it has (name undefined: none). */
export function mainValue(run, chosen) {
  const latest = run.latest || {};
  const name = mainNames(chosen).find((candidate) => candidate in latest);
  if (name !== undefined) return { name, value: latest[name] };
  if (!chosen) {
    // Some loss, when none of the usual names is there (loss/val, loss_total, ...).
    const other = Object.keys(latest)
      .filter((key) => key.startsWith("loss"))
      .sort()[0];
    if (other !== undefined) return { name: other, value: latest[other] };
  }
  return { name: undefined, value: undefined };
}

function epochMs(iso) {
  if (!iso) return NaN;
  // A timestamp without a zone designator is UTC by contract.
  return Date.parse(/(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`);
}

/**
 * Seconds the run has run: to its end, or to now while it runs, or to the last request heard
 * from a run that went silent (undefined when the times are unknown).
 */
export function durationSeconds(run, nowMs) {
  const start = epochMs(run.started_at || run.created_at);
  let end = epochMs(run.ended_at);
  if (Number.isNaN(end)) end = run.status === "running" ? nowMs : epochMs(run.last_seen_at || run.updated_at);
  if (Number.isNaN(start) || Number.isNaN(end)) return undefined;
  return Math.max(0, (end - start) / 1000);
}

/** A duration for people: 42s, 7m 05s, 3h 04m, 2d 5h. */
export function formatDuration(seconds) {
  if (seconds === undefined) return "\u2014";
  const s = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

const KINDS = { config: "config", metric: "latest", min: "min", max: "max" };

/** A column key's parts: config:<key>, metric:<name> (latest), min:<name> or max:<name>. */
export function parseColumn(key) {
  const at = key.indexOf(":");
  return { kind: key.slice(0, at), name: key.slice(at + 1) };
}

/** The header text of a column. */
export function columnLabel(key) {
  const { kind, name } = parseColumn(key);
  return kind === "min" || kind === "max" ? `${name} (${kind})` : name;
}

/** A column's cell text for a run. */
export function columnText(run, key) {
  const { kind, name } = parseColumn(key);
  if (kind === "config") {
    const flat = flatten(run.config || {});
    return name in flat ? valueText(flat[name]) : "\u2014";
  }
  if (kind === "metric") return formatValue((run.latest || {})[name]);
  const range = (run.summary || {})[name];
  return range ? formatValue(range[kind]) : "\u2014";
}

/** True for columns that hold numbers (right-aligned). */
export function isNumeric(run, key) {
  const { kind, name } = parseColumn(key);
  return kind !== "config" || typeof flatten(run.config || {})[name] === "number";
}

/** Every column the runs offer: scalar config keys, then each run-level series' latest/min/max. */
export function availableColumns(runs) {
  const config = new Set();
  const metrics = new Set();
  const ranged = new Set();
  for (const run of runs) {
    for (const [key, value] of Object.entries(flatten(run.config || {}))) {
      if (value === null || typeof value !== "object") config.add(key);
    }
    for (const name of Object.keys(run.latest || {})) metrics.add(name);
    for (const name of Object.keys(run.summary || {})) ranged.add(name);
  }
  const byName = (a, b) => a.localeCompare(b);
  const out = [...config].sort(byName).map((key) => ({ key: `config:${key}`, kind: KINDS.config }));
  for (const name of [...metrics].sort(byName)) {
    out.push({ key: `metric:${name}`, kind: KINDS.metric });
    if (ranged.has(name)) {
      out.push({ key: `min:${name}`, kind: KINDS.min }, { key: `max:${name}`, kind: KINDS.max });
    }
  }
  return out;
}

const STORAGE_PREFIX = "trickscope.runs.view:";

/** The columns and main metric chosen for a project ("" = all projects). */
export function loadView(project) {
  try {
    const saved = JSON.parse(window.localStorage.getItem(STORAGE_PREFIX + project) || "null");
    if (saved && Array.isArray(saved.columns)) {
      return {
        columns: saved.columns.filter((key) => typeof key === "string" && key.includes(":")),
        main: typeof saved.main === "string" ? saved.main : "",
      };
    }
  } catch {
    // Storage off or a hand-edited value: start from the default view.
  }
  return { columns: [], main: "" };
}

/** Remember the project's columns and main metric. */
export function saveView(project, view) {
  try {
    window.localStorage.setItem(STORAGE_PREFIX + project, JSON.stringify(view));
  } catch {
    // Storage off (private mode, quota): the choice lasts for this page only.
  }
}
