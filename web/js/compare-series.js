// Which series the compare page charts: the common panels (loss, eval metrics, LR, global
// gradient norm) picked from the names the runs have, and a search over all of them.

const TRAIN_LOSS = ["loss/train", "train/loss", "loss", "train_loss", "train/loss_epoch"];
const EVAL_LOSS = ["loss/eval", "eval/loss", "loss/val", "val/loss", "val_loss", "eval_loss", "loss/valid"];
const GRAD_NORM = ["grad_norm/total", "grad_norm", "train/grad_norm", "grad_norm/total_preclip"];
const EVAL_PREFIXES = ["eval/", "val/", "valid/", "test/", "eval_", "val_"];
// Bookkeeping a trainer logs beside its eval metrics (Hugging Face's eval_runtime, ...).
const NOT_METRICS = /(runtime|per_second|epoch|step)$/;
const MAX_EVAL = 4;
const MAX_PANELS = 8;

function isLr(name) {
  return name === "lr" || name.startsWith("lr/") || name.startsWith("lr-") || /(^|\/)learning_rate$/.test(name);
}

/** True when `name` is `<stat>/<layer>` for a declared layer. */
export function isLayerSeries(name, layers) {
  for (let at = name.indexOf("/"); at > 0; at = name.indexOf("/", at + 1)) {
    if (layers.has(name.slice(at + 1))) return true;
  }
  return false;
}

/** Run-level series first, then the per-layer ones; each group sorted. */
export function orderedNames(names, layers) {
  return [...names].sort((a, b) => {
    const la = isLayerSeries(a, layers);
    const lb = isLayerSeries(b, layers);
    return la === lb ? a.localeCompare(b) : la ? 1 : -1;
  });
}

/**
 * The panels shown first: the train loss, the eval loss, a few eval metrics, the learning rate
 * (the first group's) and the global gradient norm, as the runs name them.
 */
export function defaultPanels(names, layers) {
  const runLevel = orderedNames(names, layers).filter((name) => !isLayerSeries(name, layers));
  const present = new Set(runLevel);
  const panels = [];
  const add = (name) => {
    if (name && present.has(name) && !panels.includes(name) && panels.length < MAX_PANELS) panels.push(name);
  };
  add(TRAIN_LOSS.find((name) => present.has(name)));
  add(EVAL_LOSS.find((name) => present.has(name)));
  // Eval losses before the other eval metrics (eval/loss_raw, then eval/acc_raw, ...).
  const evalRank = (name) => (/loss/.test(name) ? 0 : 1);
  runLevel
    .filter((name) => EVAL_PREFIXES.some((prefix) => name.startsWith(prefix)))
    .filter((name) => !panels.includes(name) && !NOT_METRICS.test(name))
    .sort((a, b) => evalRank(a) - evalRank(b) || a.localeCompare(b))
    .slice(0, MAX_EVAL)
    .forEach(add);
  add(runLevel.find(isLr));
  add(GRAD_NORM.find((name) => present.has(name)));
  if (!panels.length) add(runLevel.find((name) => name.startsWith("loss")) || runLevel[0]);
  return panels;
}

/** The names that contain every word of `query` (case-insensitive), at most `limit`. */
export function searchNames(names, query, limit = 12) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return [];
  return names.filter((name) => words.every((word) => name.toLowerCase().includes(word))).slice(0, limit);
}
