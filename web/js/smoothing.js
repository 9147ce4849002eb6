// TensorBoard's scalar smoothing: a debiased exponential moving average, so the first points are
// not pulled toward zero. Non-finite values are kept where they are and do not enter the average.

import { toNumber } from "./api.js";

/**
 * The smoothed values of `values` (numbers or "NaN"/"Infinity" tokens) with weight 0 to 0.99
 * (0: unchanged). A non-finite value comes back as null (a gap), the average carried past it.
 */
export function emaSmooth(values, weight) {
  const w = Math.min(Math.max(Number(weight) || 0, 0), 0.999);
  const out = new Array(values.length);
  let last = 0;
  let count = 0;
  for (let i = 0; i < values.length; i += 1) {
    const value = toNumber(values[i]);
    if (value === null || !Number.isFinite(value)) {
      out[i] = null;
      continue;
    }
    last = last * w + (1 - w) * value;
    count += 1;
    out[i] = w === 0 ? value : last / (1 - w ** count);
  }
  return out;
}

/** The values as drawable numbers: non-finite ones null (a gap in the line). */
export function rawLine(values) {
  return values.map((item) => {
    const value = toNumber(item);
    return value === null || !Number.isFinite(value) ? null : value;
  });
}
