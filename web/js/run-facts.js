// What the measured series add to the Setup card and the gradient-norm card: backward passes per
// optimizer step and the share of steps clipped. The setup document itself never changes.

import { toNumber } from "./api.js";
import { clipShare } from "./clipping.js";
import { clippedSeries } from "./panels.js";
import { renderSetup } from "./setup.js";

/** The Setup card with what the measured series say now. */
export function showSetup(state) {
  renderSetup(document.getElementById("setup"), state.run && state.run.setup, state.setupFacts);
}

/** The gradient-norm card's note: how many of the steps drawn were clipped, when measured. */
function showGradnormNote(state) {
  const clip = state.setupFacts.clip;
  const note = document.getElementById("gradnorm-note");
  note.textContent = clip
    ? `clipped on ${(100 * clip.share).toFixed(0)}% of steps (${clip.clipped} of ${clip.count} drawn)`
    : "";
}

/** A trick panel drew: the facts the Setup card and the gradient-norm note take from it. */
export function panelDrawn(state, key, chart) {
  if (key === "clipped") {
    state.setupFacts.clip = clipShare(clippedSeries(chart));
    showGradnormNote(state);
    showSetup(state);
  } else if (key === "accum") {
    const stored = chart.store.get("accum/backward_passes");
    if (!stored || !stored.v.length) return;
    state.setupFacts.backwardPasses = toNumber(stored.v[stored.v.length - 1]);
    showSetup(state);
  }
}
