// Run liveness as the server reports it. A running run whose training process sent nothing for
// the server's grace period reads "crashed" with no end time: it may still be heard from (a late
// batch after a network outage), and then it reads "running" again. A run that ended (finished,
// failed, or crashed as its own process reported) has an end time and stays as it is.

import { FINAL_STATUSES, formatTime } from "./api.js";
import { statusBadge } from "./dom.js";

/** True when the run reads crashed only because its training process went silent. */
export function isSilent(run) {
  return Boolean(run) && run.status === "crashed" && !run.ended_at;
}

/** True when the run ended for good, so its live stream can close. */
export function hasEnded(run) {
  return Boolean(run) && FINAL_STATUSES.has(run.status) && !isSilent(run);
}

/** Explain a silent run's badge in its tooltip (and mark it for styling); clear it otherwise. */
export function describeStatus(node, run) {
  if (isSilent(run)) {
    node.title =
      `No request from the training process since ${formatTime(run.last_seen_at)}: it was ` +
      "probably killed. A late request shows the run running again.";
    node.dataset.silent = "true";
  } else {
    node.removeAttribute("title");
    delete node.dataset.silent;
  }
}

/** A status badge for a run, a silent run's explained. */
export function runBadge(run) {
  const badge = statusBadge(run.status);
  describeStatus(badge, run);
  return badge;
}
