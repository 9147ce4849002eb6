// The Health panel's list of checks: which ran (and how many findings each raised) and which
// could not run, with the reason. "No problems found" means little without it: a run the
// server could not check (no setup, no per-layer series) also raises nothing.

import { el } from "./dom.js";

/** The report's checks, split; tolerates servers that send none (older ones) or odd entries. */
export function splitChecks(report) {
  const checks = report && Array.isArray(report.checks) ? report.checks : null;
  if (!checks) return null;
  const ran = [];
  const skipped = [];
  for (const check of checks) {
    if (!check || typeof check !== "object") continue;
    (check.status === "skipped" ? skipped : ran).push(check);
  }
  return { ran, skipped };
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** "23 checks ran · 4 could not run". */
export function checksSummary({ ran, skipped }) {
  const parts = [`${plural(ran.length, "check")} ran`];
  if (skipped.length) parts.push(`${skipped.length} could not run`);
  return parts.join(" \u00B7 ");
}

function checkTitle(check) {
  return String(check.title || check.id || "");
}

function ranItem(check) {
  const count = typeof check.findings === "number" ? check.findings : 0;
  return el(
    "li",
    { dataset: { check: String(check.id || ""), status: "ran", findings: String(count) } },
    [
      el("span", { className: count ? "check-mark check-hit" : "check-mark", text: count ? "\u25CF" : "\u2713" }),
      el("span", { className: "check-title", text: checkTitle(check) }),
      count ? el("span", { className: "muted", text: ` \u2014 ${plural(count, "finding")}` }) : null,
    ],
  );
}

function skippedItem(check) {
  return el("li", { dataset: { check: String(check.id || ""), status: "skipped" } }, [
    el("span", { className: "check-mark", text: "\u2013" }),
    el("span", { className: "check-title", text: checkTitle(check) }),
    el("span", { className: "check-reason muted", text: check.reason ? `: ${check.reason}` : "" }),
  ]);
}

/**
 * Fill the <details> `root` with the checks (its open state is the user's and stays). Hidden
 * when the server sends no checks.
 */
export function renderChecks(root, split) {
  if (!split || (!split.ran.length && !split.skipped.length)) {
    root.hidden = true;
    root.replaceChildren();
    return;
  }
  const open = root.open;
  const body = [el("summary", { text: checksSummary(split) })];
  if (split.ran.length) {
    body.push(el("h3", { text: "Ran" }), el("ul", { className: "checks-list checks-ran" }, split.ran.map(ranItem)));
  }
  if (split.skipped.length) {
    body.push(
      el("h3", { text: "Could not run" }),
      el("ul", { className: "checks-list checks-skipped" }, split.skipped.map(skippedItem)),
    );
  }
  root.replaceChildren(...body);
  root.open = open;
  root.hidden = false;
  root.dataset.ran = String(split.ran.length);
  root.dataset.skipped = String(split.skipped.length);
}
