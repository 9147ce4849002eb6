// The run page's Health panel: the server's findings (GET /runs/{id}/health), most severe first,
// one row each. A row whose finding the page can act on (a layer, a step, a trick panel) is a
// button; the page says what it does through `actionOf`. Findings are untrusted text: every
// piece becomes a text node (dom.js), never markup.

import { api } from "./api.js";
import { el } from "./dom.js";

export const HEALTH_REFRESH_MS = 5000; // while the run is live, re-check at most this often

const SEVERITIES = ["error", "warning", "info"];

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** "1 error · 2 warnings · 1 info" for the panel's heading. */
function summaryText(findings) {
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

function isStep(value) {
  return typeof value === "number" && Number.isInteger(value);
}

function isLayer(value) {
  return typeof value === "string" && value.length > 0;
}

/**
 * One finding as a list item. `action` is null or {label, run}: with one, the row's body is a
 * button that runs it; the label says what a click does.
 */
function findingRow(finding, action) {
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
  const body = [
    el("span", { className: `sev sev-${kind}`, text: severity }),
    el("span", { className: "finding-text" }, [
      el("span", { className: "finding-title", text: finding.title || finding.check || "" }),
      el("span", { className: "finding-detail", text: finding.detail || "" }),
    ]),
    el("span", { className: "chips" }, chips),
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
      dataset: { check: String(finding.check || ""), severity, action: action ? action.kind : "" },
    },
    [main],
  );
}

/**
 * The panel. refresh() reads now; schedule() reads at most every HEALTH_REFRESH_MS (live
 * points); final() reads once more at once (the run ended); stop() ends all reads. Answers are
 * rendered only once `ready` resolves (the page knows the run's layers by then), only when no
 * newer read was started, and only when they differ from what is shown: a live refresh touches
 * the panel's list and nothing else on the page.
 *
 * The root carries data-state (loading | ok | findings | error), data-count and data-refreshes
 * (answers received) for tests.
 */
export class HealthPanel {
  constructor(root, runId, { actionOf, ready, canFetch }) {
    this.root = root;
    this.runId = runId;
    this.actionOf = actionOf;
    // False while the server is unreachable (the live stream reconnects): a read then would only
    // fail; the scheduled read waits for resume() instead.
    this.canFetch = canFetch || (() => true);
    this.waiting = false;
    this.ready = ready || Promise.resolve();
    this.list = root.querySelector("#health-list");
    this.status = root.querySelector("#health-status");
    this.summary = root.querySelector("#health-summary");
    this.seq = 0;
    this.lastFetch = 0;
    this.timer = null;
    this.stopped = false;
    this.shownKey = null;
    this.refreshes = 0;
  }

  async refresh() {
    if (this.stopped) return;
    this.lastFetch = Date.now();
    this.seq += 1;
    const seq = this.seq;
    let findings = null;
    let failure = null;
    try {
      const report = await api.health(this.runId);
      findings = Array.isArray(report && report.findings) ? report.findings : [];
    } catch (error) {
      failure = error;
    }
    await this.ready;
    if (this.stopped || seq !== this.seq) return; // a newer read answers instead
    this.refreshes += 1;
    this.root.dataset.refreshes = String(this.refreshes);
    if (failure) this.fail(failure);
    else this.render(findings);
  }

  schedule() {
    if (this.timer || this.stopped) return;
    const wait = Math.max(0, this.lastFetch + HEALTH_REFRESH_MS - Date.now());
    this.timer = window.setTimeout(() => {
      this.timer = null;
      if (this.canFetch()) this.refresh();
      else this.waiting = true;
    }, wait);
  }

  /** The server is reachable again: run a read that waited for it. */
  resume() {
    if (!this.waiting) return;
    this.waiting = false;
    this.schedule();
  }

  final() {
    if (this.timer) window.clearTimeout(this.timer);
    this.timer = null;
    this.waiting = false;
    this.refresh();
  }

  stop() {
    this.stopped = true;
    if (this.timer) window.clearTimeout(this.timer);
    this.timer = null;
  }

  render(findings) {
    const actions = findings.map((finding) => this.actionOf(finding));
    const key = JSON.stringify([findings, actions.map((action) => (action ? action.kind : null))]);
    // Same findings as shown: the rows (and the focus on one of them) stay as they are.
    if (key !== this.shownKey) {
      this.shownKey = key;
      this.list.replaceChildren(...findings.map((finding, i) => findingRow(finding, actions[i])));
    }
    this.summary.textContent = summaryText(findings);
    this.status.textContent = findings.length ? "" : "No problems found";
    this.status.hidden = findings.length > 0;
    this.root.dataset.count = String(findings.length);
    this.root.dataset.state = findings.length ? "findings" : "ok";
  }

  fail(error) {
    if (error && error.status === 404) {
      // No such run: the page says so in its banner; an empty health panel would only repeat it.
      this.root.hidden = true;
      this.stop();
      return;
    }
    // Rows already shown stay: they were true a moment ago and the next refresh may succeed.
    const answered = error && typeof error.status === "number";
    // No answer at all (the server is down): read again once the live stream is back.
    if (!answered) this.waiting = true;
    const reason = answered ? error.message : "the server did not answer";
    this.status.textContent = `Health checks unavailable: ${reason}`;
    this.status.hidden = false;
    this.root.dataset.state = "error";
  }
}
