// How often clipping scaled the gradients down, from a 0/1 series (clip/observed, measured by
// the agent at the default attach; clip/clipped from the clip reporter). Both the gradient-norm
// chart and the Setup card say it.

import { toNumber } from "./api.js";

/** {share, clipped, count} over the points `stored` holds ({x, v}), or null when none. */
export function clipShare(stored, last = Infinity) {
  if (!stored || !stored.x.length) return null;
  const values = stored.v.slice(-Math.min(last, stored.v.length)).map(toNumber);
  const seen = values.filter((value) => value !== null && Number.isFinite(value));
  if (!seen.length) return null;
  const clipped = seen.filter((value) => value > 0).length;
  return { share: clipped / seen.length, clipped, count: seen.length };
}
