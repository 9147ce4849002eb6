// The run page's header and its folded details: name, status and meta; the config, trick
// settings and system info as one-line summaries that open into their tables. Every value is
// untrusted: text nodes only.

import { formatTime } from "./api.js";
import { el, setStatusBadge } from "./dom.js";
import { describeStatus } from "./liveness.js";

const SUMMARY_PAIRS = 6; // key=value pairs on the config's summary line
// Keys that tell runs apart first, when the config has them; then the others in table order.
const SUMMARY_FIRST = ["lr", "learning_rate", "optimizer", "batch_size", "epochs", "max_steps", "model", "weight_decay"];

function valueText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function fillTable(table, object, emptyText, keyCell = (key) => [key]) {
  table.replaceChildren();
  const entries = object && typeof object === "object" ? Object.entries(object) : [];
  if (!entries.length) {
    table.append(el("tr", {}, [el("td", { className: "muted", text: emptyText })]));
    return;
  }
  entries.sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true })); // rank 2 < rank 10
  for (const [key, value] of entries) {
    table.append(
      el("tr", {}, [el("th", { title: key, attrs: { scope: "row" } }, keyCell(key)), el("td", { text: valueText(value) })]),
    );
  }
}

const INLINE_ITEMS = 6; // lists and objects up to this many plain entries are shown inline
const NESTED_DEPTH = 4; // deeper settings are shown as JSON

/** A setting for people: numbers to 6 significant digits (0.1 + 0.2 noise dropped). */
function settingText(value) {
  if (typeof value === "number" && Number.isFinite(value) && !Number.isInteger(value)) {
    return String(Number(value.toPrecision(6)));
  }
  return valueText(value);
}

function isPlain(value) {
  return value === null || typeof value !== "object";
}

/**
 * A trick setting's value as nodes: plain values as text, short plain lists inline, objects and
 * longer lists as a nested list, folded behind a <details> when long (an optimizer's param
 * groups, the parameter names of a group).
 */
function settingNodes(value, depth = 0) {
  if (isPlain(value)) return [el("span", { text: settingText(value) })];
  const entries = Array.isArray(value) ? value.map((item, i) => [String(i), item]) : Object.entries(value);
  if (depth >= NESTED_DEPTH) return [el("span", { text: valueText(value) })];
  const plain = entries.every(([, item]) => isPlain(item));
  if (Array.isArray(value) && plain && value.length <= INLINE_ITEMS) {
    return [el("span", { text: `[${value.map(settingText).join(", ")}]` })];
  }
  const items = entries.map(([key, item]) =>
    Array.isArray(value)
      ? el("li", {}, settingNodes(item, depth + 1))
      : el("li", {}, [el("span", { className: "k", text: key }), " ", ...settingNodes(item, depth + 1)]),
  );
  const list = el("ul", { className: "nested" }, items);
  if (plain && entries.length <= INLINE_ITEMS) return [list];
  const noun = Array.isArray(value) ? "item" : "key";
  const label = `${entries.length} ${noun}${entries.length === 1 ? "" : "s"}`;
  return [el("details", { className: "setting" }, [el("summary", { text: label }), list])];
}

/** The run's trick configuration (config.tricks) as one card per trick, all text. */
function renderTricks(tricks) {
  const box = document.getElementById("trick-summary");
  box.replaceChildren();
  const entries = tricks && typeof tricks === "object" ? Object.entries(tricks) : [];
  if (!entries.length) {
    box.append(el("p", { className: "muted", text: "no trick configuration recorded (config.tricks)" }));
    return;
  }
  entries.sort(([a], [b]) => a.localeCompare(b));
  for (const [trick, settings] of entries) {
    const items = [];
    if (settings && typeof settings === "object" && !Array.isArray(settings)) {
      for (const [key, value] of Object.entries(settings)) {
        items.push(el("li", {}, [el("span", { className: "k", text: key }), " ", ...settingNodes(value)]));
      }
    } else {
      items.push(el("li", {}, settingNodes(settings)));
    }
    box.append(el("div", { className: "trick", dataset: { trick } }, [el("h3", { text: trick }), el("ul", {}, items)]));
  }
}

/**
 * A config key as nodes that wrap only between its parts: each piece between dots, slashes,
 * underscores or dashes is kept whole (white-space: nowrap), a line break may follow a separator.
 */
export function keyNodes(key) {
  const nodes = [];
  for (const part of String(key).split(/(?<=[./_\-:])/)) {
    if (nodes.length) nodes.push(el("wbr"));
    nodes.push(el("span", { className: "key-part", text: part }));
  }
  return nodes;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** "29 keys · lr=0.1 optimizer=sgd batch_size=128 …": the keys that tell runs apart first. */
export function configSummary(config) {
  const entries = config && typeof config === "object" ? Object.entries(config) : [];
  if (!entries.length) return "none recorded";
  const plain = new Map(entries.filter(([, value]) => isPlain(value)));
  const first = SUMMARY_FIRST.filter((key) => plain.has(key));
  const rest = [...plain.keys()]
    .filter((key) => !SUMMARY_FIRST.includes(key))
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const shown = [...first, ...rest].slice(0, SUMMARY_PAIRS);
  const pairs = shown.map((key) => `${key}=${settingText(plain.get(key))}`);
  if (entries.length > shown.length) pairs.push("\u2026");
  return [plural(entries.length, "key"), pairs.join(" ")].filter(Boolean).join(" \u00B7 ");
}

/** The header and the folded config, tricks and system details of a run. */
export function renderHeader(run) {
  document.title = `${run.name || run.id} · trickscope`;
  document.getElementById("run-name").textContent = run.name || run.id;
  showStatus(run);
  document.getElementById("run-project").textContent = run.project || "";
  document.getElementById("run-id").textContent = run.id;
  document.getElementById("run-started").textContent = formatTime(run.started_at || run.created_at);
  showEnded(run);
  const tags = document.getElementById("run-tags");
  tags.replaceChildren(...(run.tags || []).map((tag) => el("span", { className: "tag", text: tag })));
  if (!(run.tags || []).length) tags.textContent = "\u2014";
  // config.tricks has its own summary next to the table; as one JSON cell it would only repeat it.
  const config = run.config && typeof run.config === "object" ? { ...run.config } : run.config;
  if (config && typeof config === "object" && typeof config.tricks === "object") delete config.tricks;
  fillTable(document.getElementById("config-table"), config, "no config recorded", keyNodes);
  document.getElementById("config-summary").textContent = configSummary(config);
  const system = { ...run.system, ...rankRows(run.ranks) };
  fillTable(document.getElementById("system-table"), system, "no system info recorded", keyNodes);
  document.getElementById("system-summary").textContent = systemSummary(run.system, run.ranks);
  renderTricks(run.config && run.config.tricks);
  const tricks = run.config && typeof run.config.tricks === "object" ? Object.keys(run.config.tricks || {}) : [];
  document.getElementById("tricks-summary").textContent = tricks.length ? tricks.sort().join(" \u00B7 ") : "none recorded";
}

/** "python 3.12 · torch 2.5 · 4 ranks": what the system table holds, on one line. */
function systemSummary(system, ranks) {
  const info = system && typeof system === "object" ? system : {};
  const parts = [];
  for (const key of ["hostname", "python", "torch", "device", "gpu"]) {
    const value = info[key];
    if (value !== undefined && value !== null && value !== "" && isPlain(value)) parts.push(`${key} ${value}`);
  }
  const count = Object.keys(ranks || {}).length;
  if (count) parts.push(plural(count, "rank"));
  return parts.join(" \u00B7 ") || `${plural(Object.keys(info).length, "key")}`;
}


/** A distributed run's ranks as system-table rows: "rank 2" → "node-b · pid 4242 · local rank 0". */
function rankRows(ranks) {
  const rows = {};
  for (const [rank, info] of Object.entries(ranks || {})) {
    const parts = [info.hostname, info.pid !== undefined ? `pid ${info.pid}` : null];
    if (info.local_rank !== undefined) parts.push(`local rank ${info.local_rank}`);
    if (info.device) parts.push(info.device);
    rows[`rank ${rank}`] = parts.filter((part) => part !== null && part !== undefined).join(" · ");
  }
  return rows;
}

export function showStatus(run) {
  const badge = document.getElementById("run-status");
  setStatusBadge(badge, run.status);
  describeStatus(badge, run);
}

export function showEnded(run) {
  document.getElementById("run-ended").textContent = run.ended_at ? formatTime(run.ended_at) : "\u2014";
}
