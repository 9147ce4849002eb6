// One health finding as a list item: severity, title, why it matters, what to try, the evidence
// values, and chips for its step and layer. Findings are untrusted text: every piece becomes a
// text node (dom.js), never markup.

import { formatValue } from "./api.js";
import { el } from "./dom.js";

export const SEVERITIES = ["error", "warning", "info"];

export function isStep(value) {
  return typeof value === "number" && Number.isInteger(value);
}

function isLayer(value) {
  return typeof value === "string" && value.length > 0;
}

function text(value) {
  return typeof value === "string" ? value.trim() : "";
}

/** An evidence value for people: numbers (and their non-finite tokens) to 4 digits, lists inline. */
function evidenceText(value) {
  if (Array.isArray(value)) return value.map(evidenceText).join(", ");
  if (typeof value === "number" || ["NaN", "Infinity", "-Infinity"].includes(value)) {
    return formatValue(value);
  }
  if (value === null || value === undefined) return "\u2014";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function evidenceList(evidence) {
  if (!evidence || typeof evidence !== "object" || Array.isArray(evidence)) return null;
  const entries = Object.entries(evidence);
  if (!entries.length) return null;
  return el(
    "dl",
    { className: "finding-evidence" },
    entries.map(([key, value]) =>
      el("div", { dataset: { key } }, [el("dt", { text: key }), el("dd", { text: evidenceText(value) })]),
    ),
  );
}

/**
 * The finding's explanation. The contract splits it into `why` and `remedy`; older servers send
 * one `detail` paragraph (why + what to try), shown as it is.
 */
function explanation(finding) {
  const why = text(finding.why);
  const remedy = text(finding.remedy);
  const nodes = [el("span", { className: "finding-detail", text: why || text(finding.detail) })];
  // The remedy and the evidence share a line where both fit: Health stays short enough for the
  // charts to start on the first screen.
  const foot = [];
  if (remedy) {
    foot.push(
      el("span", { className: "finding-remedy" }, [el("span", { className: "label", text: "What to try: " }), remedy]),
    );
  }
  const evidence = evidenceList(finding.evidence);
  if (evidence) foot.push(evidence);
  if (foot.length) nodes.push(el("span", { className: "finding-foot" }, foot));
  return nodes;
}

/**
 * One finding as a list item. `action` is null or {kind, label, run}: with one, the row's body is
 * a button that runs it; the label says what a click does.
 */
export function findingRow(finding, action) {
  const severity = String(finding.severity || "unknown");
  const kind = SEVERITIES.includes(severity) ? severity : "unknown";
  const chips = [];
  if (isStep(finding.step)) {
    chips.push(el("span", { className: "chip", dataset: { chip: "step" }, text: `step ${finding.step}` }));
  }
  if (isLayer(finding.layer)) {
    chips.push(
      el("span", { className: "chip chip-layer", title: finding.layer, dataset: { chip: "layer" } }, [
        "layer ",
        el("span", { className: "mono", text: finding.layer }),
      ]),
    );
  }
  if (action) chips.push(el("span", { className: "finding-action", text: `${action.label} \u203A` }));
  // The chips share the title's line while it has room, and wrap under the title when not.
  const body = [
    el("span", { className: `sev sev-${kind}`, text: severity }),
    el("span", { className: "finding-text" }, [
      el("span", { className: "finding-head" }, [
        el("span", { className: "finding-title", text: finding.title || finding.check || "" }),
        el("span", { className: "chips" }, chips),
      ]),
      ...explanation(finding),
    ]),
  ];
  let main;
  if (action) {
    main = el("button", { className: "finding-main", attrs: { type: "button" } }, body);
    main.addEventListener("click", () => action.run(finding));
  } else {
    main = el("div", { className: "finding-main" }, body);
  }
  return el(
    "li",
    {
      className: `finding finding-${kind}`,
      dataset: {
        check: String(finding.check || ""),
        severity,
        action: action ? action.kind : "",
        source: String(finding.source || ""),
      },
    },
    [main],
  );
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** "1 error · 2 warnings · 1 info" for the panel's heading. */
export function summaryText(findings) {
  const counts = new Map(SEVERITIES.map((severity) => [severity, 0]));
  let other = 0;
  for (const finding of findings) {
    if (counts.has(finding.severity)) counts.set(finding.severity, counts.get(finding.severity) + 1);
    else other += 1;
  }
  const parts = [];
  if (counts.get("error")) parts.push(plural(counts.get("error"), "error"));
  if (counts.get("warning")) parts.push(plural(counts.get("warning"), "warning"));
  if (counts.get("info")) parts.push(`${counts.get("info")} info`);
  if (other) parts.push(`${other} other`);
  return parts.join(" · ");
}

/** The findings that name a step, as chart marks [{step, severity, text}] (findingShapes). */
export function stepMarks(findings) {
  const marks = [];
  for (const finding of findings) {
    if (!isStep(finding.step)) continue;
    const where = isLayer(finding.layer) ? ` in ${finding.layer}` : "";
    const title = finding.title || finding.check || "finding";
    marks.push({
      step: finding.step,
      severity: String(finding.severity || ""),
      text: `${finding.severity || "finding"}: ${title}${where} (step ${finding.step})`,
    });
  }
  return marks;
}
