// The run page's Health panel: the server's findings (GET /runs/{id}/health, or pushed as the
// live stream's `health` event), most severe first, one row each, then the checks that ran and
// those that could not. A row whose finding the page can act on (a layer, a step, a trick panel)
// is a button; the page says what it does through `actionOf`.

import { api } from "./api.js";
import { renderChecks, splitChecks } from "./checks.js";
import { findingRow, summaryText } from "./findings.js";

export const HEALTH_REFRESH_MS = 5000; // while the run is live, re-check at most this often

/** The empty state says how much was checked: nothing found by 3 checks is not a clean bill. */
function okText(checks) {
  if (!checks) return "No problems found";
  const ran = checks.ran.length;
  if (!ran) return "No checks could run yet";
  return `No problems found by ${ran} check${ran === 1 ? "" : "s"}`;
}

/**
 * The panel. refresh() reads now; schedule() reads at most every HEALTH_REFRESH_MS (live
 * points); final() reads once more at once (the run ended); stop() ends all reads. Answers are
 * rendered only once `ready` resolves (the page knows the run's layers by then), only when no
 * newer read was started, and only when they differ from what is shown: a live refresh touches
 * the panel's list and nothing else on the page.
 *
 * accept(report) renders a report the live stream pushed; it supersedes any read in flight and
 * postpones the next scheduled one, so polling only fills in where no push comes. unchanged()
 * hears that the stream's latest diagnosis found the report shown: it postpones the next read
 * just the same, so a page on a live run whose findings hold reads nothing itself.
 * onReport(findings, report) hears every report rendered (the page marks the findings on its
 * charts and shades the bands the rules judge by).
 *
 * The root carries data-state (loading | ok | findings | error), data-count, data-refreshes
 * (answers received, read or pushed), data-pushes and data-unchanged for tests.
 */
export class HealthPanel {
  constructor(root, runId, { actionOf, ready, canFetch, onReport }) {
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
    this.checks = root.querySelector("#health-checks");
    this.onReport = onReport || (() => {});
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
    let report = null;
    let failure = null;
    try {
      report = await api.health(this.runId);
    } catch (error) {
      failure = error;
    }
    await this.ready;
    if (this.stopped || seq !== this.seq) return; // a newer read (or push) answers instead
    this.refreshes += 1;
    this.root.dataset.refreshes = String(this.refreshes);
    if (failure) this.fail(failure);
    else this.render(report);
  }

  /** A report pushed by the live stream: as fresh as a read, so the next read waits a period. */
  async accept(report) {
    if (this.stopped || !report || typeof report !== "object") return;
    this.postpone();
    this.seq += 1;
    const seq = this.seq;
    await this.ready;
    if (this.stopped || seq !== this.seq) return;
    this.refreshes += 1;
    this.root.dataset.refreshes = String(this.refreshes);
    this.root.dataset.pushes = String(Number(this.root.dataset.pushes || 0) + 1);
    this.render(report);
  }

  /** The stream diagnosed the run again and found the report it last pushed: nothing to read. */
  unchanged() {
    if (this.stopped) return;
    this.postpone();
    this.root.dataset.unchanged = String(Number(this.root.dataset.unchanged || 0) + 1);
  }

  /** The stream spoke for the server: the next read waits a whole period from now. */
  postpone() {
    this.lastFetch = Date.now();
    if (this.timer) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
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

  render(report) {
    const findings = report && Array.isArray(report.findings) ? report.findings : [];
    const checks = splitChecks(report);
    const actions = findings.map((finding) => this.actionOf(finding));
    const key = JSON.stringify([findings, actions.map((action) => (action ? action.kind : null)), checks]);
    // Same report as shown: the rows (and the focus on one of them) stay as they are.
    if (key !== this.shownKey) {
      this.shownKey = key;
      this.list.replaceChildren(...findings.map((finding, i) => findingRow(finding, actions[i])));
      if (this.checks) renderChecks(this.checks, checks);
      this.onReport(findings, report);
    }
    this.summary.textContent = summaryText(findings);
    this.status.textContent = findings.length ? "" : okText(checks);
    this.status.hidden = findings.length > 0;
    this.root.dataset.count = String(findings.length);
    // Checks were listed and none could run: nothing was checked, which is not "ok".
    const unchecked = !findings.length && checks && !checks.ran.length;
    this.root.dataset.state = findings.length ? "findings" : unchecked ? "unchecked" : "ok";
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
