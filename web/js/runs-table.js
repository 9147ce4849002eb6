// The runs table's DOM: a header of sortable columns (the fixed ones, the chosen config and
// summary columns, the sort key when it is not shown) and one row per run.

import { formatTime, formatValue } from "./api.js";
import { el } from "./dom.js";
import { runBadge } from "./liveness.js";
import {
  columnLabel,
  columnText,
  durationSeconds,
  formatDuration,
  isNumeric,
  mainValue,
  parseColumn,
} from "./run-columns.js";
import { sparkline } from "./sparkline.js";

/**
 * The columns of the table for a view ({columns, main}) and a sort key: [{id, label, sort,
 * numeric, chosen}]. A config or metric sort key that is not a chosen column gets its own
 * column, so the order is visible.
 */
export function tableColumns(view, sortKey) {
  const columns = [
    { id: "project", label: "Project", sort: "project" },
    { id: "name", label: "Name", sort: "name" },
    { id: "status", label: "Status", sort: "status" },
    { id: "started", label: "Started", sort: "created_at" },
    { id: "duration", label: "Duration", sort: "duration", numeric: true },
    { id: "step", label: "Step", sort: "step", numeric: true },
    { id: "main", label: view.main || "Loss", sort: "loss", numeric: true },
  ];
  for (const key of view.columns) {
    columns.push({ id: key, label: columnLabel(key), sort: key, numeric: true, chosen: true });
  }
  const extra = /^(config|metric|min|max):/.test(sortKey) && !view.columns.includes(sortKey);
  if (extra) columns.push({ id: "sort-col", label: columnLabel(sortKey), sort: sortKey, numeric: true });
  columns.push({ id: "select", label: "Compare" });
  return columns;
}

/** The header row; `actions` holds onSort(key), onRemove(key) and onFilter(key). */
export function headerRow(columns, sort, actions) {
  const cells = columns.map((column) => {
    const th = el("th", { dataset: { col: column.id }, className: column.numeric ? "num" : "" });
    if (column.id === "sort-col") th.id = "sort-col";
    if (column.id === "select") {
      th.className = "select-col";
      th.textContent = column.label;
      return th;
    }
    const active = sort.key === column.sort;
    const button = el("button", {
      className: "th-sort",
      text: column.label,
      title: `sort by ${column.sort}`,
      attrs: { type: "button" },
      dataset: { sort: column.sort },
    });
    if (active) button.dataset.active = sort.desc ? "desc" : "asc";
    button.addEventListener("click", () => actions.onSort(column.sort));
    th.append(button);
    if (column.chosen) {
      const { kind } = parseColumn(column.id);
      if (kind === "config" || kind === "metric") {
        const filter = el("button", {
          className: "th-action",
          text: "\u25bf",
          title: "filter by this column",
          attrs: { type: "button", "aria-label": `filter by ${column.label}` },
        });
        filter.addEventListener("click", () => actions.onFilter(column.id));
        th.append(filter);
      }
      const remove = el("button", {
        className: "th-action",
        text: "\u00d7",
        title: "remove this column",
        attrs: { type: "button", "aria-label": `remove ${column.label}` },
      });
      remove.addEventListener("click", () => actions.onRemove(column.id));
      th.append(remove);
    }
    return th;
  });
  return el("tr", {}, cells);
}

function nameCell(run, parts) {
  const href = `/runs/${encodeURIComponent(run.id)}`;
  const children = [el("a", { href, text: run.name || run.id, className: "run-link" })];
  if (parts.length) children.push(el("span", { className: "run-diff mono", text: ` \u00b7 ${parts.join(" ")}` }));
  return el("td", { dataset: { col: "name" } }, children);
}

function mainCell(run, main, line) {
  const { value } = mainValue(run, main);
  const cell = el("td", { className: "num mono main-metric", dataset: { col: "main" } }, [
    el("span", { className: "main-value", text: value === undefined ? "\u2014" : formatValue(value) }),
  ]);
  if (line && line.name) cell.prepend(sparkline(line));
  return cell;
}

/** The duration cell; a running run's carries its start so that a timer can advance it. */
export function durationCell(run, nowMs) {
  const cell = el("td", { className: "num mono", dataset: { col: "duration" } });
  cell.textContent = formatDuration(durationSeconds(run, nowMs));
  if (run.status === "running" && !run.ended_at) cell.dataset.live = "true";
  return cell;
}

/**
 * One run's row. `context`: {columns, view, nameParts, selected, sparklines, onSelect, now}.
 */
export function runRow(run, context) {
  const box = el("input", { className: "select-run", attrs: { type: "checkbox", "aria-label": "compare" } });
  box.dataset.runId = run.id;
  box.checked = context.selected.has(run.id);
  box.addEventListener("change", () => context.onSelect(run.id, box.checked));
  const cells = context.columns.map((column) => {
    switch (column.id) {
      case "project":
        return el("td", { text: run.project, dataset: { col: "project" } });
      case "name":
        return nameCell(run, context.nameParts(run));
      case "status":
        return el("td", { dataset: { col: "status" } }, [runBadge(run)]);
      case "started":
        return el("td", { text: formatTime(run.started_at || run.created_at), dataset: { col: "started" } });
      case "duration":
        return durationCell(run, context.now);
      case "step":
        return el("td", { className: "num mono", text: run.last_step ?? "\u2014", dataset: { col: "step" } });
      case "main":
        return mainCell(run, context.view.main, context.sparklines.get(run.id));
      case "select":
        return el("td", { className: "select-col", dataset: { col: "select" } }, [box]);
      default: {
        const key = column.sort;
        const numeric = isNumeric(run, key);
        return el("td", {
          className: `mono${numeric ? " num" : ""}${column.id === "sort-col" ? " sort-value" : ""}`,
          text: columnText(run, key),
          dataset: { col: column.id },
        });
      }
    }
  });
  return el("tr", { dataset: { runId: run.id, status: run.status || "" } }, cells);
}

/** The row heading a project's runs when the table is grouped. */
export function groupRow(project, count, span) {
  return el("tr", { className: "group-row", dataset: { project } }, [
    el("th", { text: `${project} (${count})`, attrs: { colspan: String(span) } }),
  ]);
}
