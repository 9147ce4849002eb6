// The run page's trick panels: which series each one takes, how its traces look, and the line
// of text under its heading (share of steps clipped, whether the ranks agree).

import { toNumber } from "./api.js";
import { clipShare } from "./clipping.js";

export const EPS_DOMINANCE_TOP = 10; // layers drawn in the eps-dominance panel (highest last value)
const CLIP_WINDOW = 100; // logged steps over which the share clipped is given

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];

function blockStyle(state, name, kind) {
  // DropPath: configured rate dashed, realised solid with markers, one colour per block.
  const block = name.slice(`drop_path/${kind}/`.length);
  if (!state.blockColour.has(block)) {
    state.blockColour.set(block, PALETTE[state.blockColour.size % PALETTE.length]);
  }
  const color = state.blockColour.get(block);
  return kind === "rate"
    ? { line: { dash: "dash", color }, mode: "lines" }
    : { line: { color }, marker: { color }, mode: "lines+markers" };
}

/**
 * One panel per trick, in this order; each appears when its first series does. `match` picks
 * the series, `title` names the card, `note` (optional) writes a line under the heading,
 * `section` (default "tricks") says where: "ranks" holds a distributed job's per-rank summary.
 * `logy` asks for a log axis; a chart whose values include zero (or less) gets a linear one.
 */
export const PANELS = [
  {
    key: "lr",
    title: "Learning rate per param group", // "(warmup shaded)" is added when a warmup is known
    match: (name) => name.startsWith("lr/"),
    ytitle: "learning rate",
    warmup: true,
  },
  {
    key: "acc",
    title: "Evaluation accuracy: raw vs EMA",
    // "acc", "acc_top1", "accuracy/val", eval/*; never the accumulation trick's "accum/".
    match: (name) => /^acc(uracy)?([/_]|$)/.test(name) || (name.startsWith("eval/") && !name.startsWith("eval/loss")),
    ytitle: "accuracy",
    mode: "lines+markers",
    style: (name) => (name.endsWith("_ema") ? { line: { dash: "dash" } } : {}),
  },
  {
    key: "evalloss",
    title: "Evaluation loss: raw vs EMA",
    match: (name) => name.startsWith("eval/loss"),
    ytitle: "loss",
    mode: "lines+markers",
    style: (name) => (name.endsWith("_ema") ? { line: { dash: "dash" } } : {}),
  },
  {
    key: "ema",
    title: "EMA distance ‖ν − θ‖ / ‖θ‖",
    match: (name) => name === "ema/distance",
    ytitle: "relative distance",
    logy: true,
  },
  { key: "emadecay", title: "EMA decay per step", match: (name) => name.startsWith("ema/") && name !== "ema/distance", ytitle: "decay" },
  // Linear axes: a group without decay (norms, biases) is at 0, a value a log axis cannot draw.
  {
    key: "wd",
    title: "Weight decay per group",
    match: (name) => name.startsWith("wd/") && !name.startsWith("wd/shrink/"),
    ytitle: "weight decay",
  },
  {
    key: "wdshrink",
    title: "Per-step shrink lr·wd per group",
    match: (name) => name.startsWith("wd/shrink/"),
    ytitle: "lr·wd",
    style: () => ({ line: { dash: "dot" } }),
  },
  {
    key: "droppath",
    title: "DropPath per block: configured rate (dashed) vs realised drop fraction",
    match: (name) => name.startsWith("drop_path/"),
    ytitle: "drop probability",
    style: (name, state) => blockStyle(state, name, name.startsWith("drop_path/rate/") ? "rate" : "realised"),
  },
  {
    key: "clip",
    title: "Gradient clipping: pre- and post-clip norm, threshold",
    match: (name) => ["clip/pre_norm", "clip/post_norm", "clip/threshold"].includes(name),
    ytitle: "‖g‖₂",
    style: (name) => (name === "clip/threshold" ? { line: { dash: "dash", color: "#6b7280" } } : {}),
  },
  {
    key: "clipped",
    title: "Clip coefficient and clipped steps",
    match: (name) => name.startsWith("clip/"),
    ytitle: "coefficient / clipped (0|1)",
    style: (name) => (name === "clip/clipped" ? { mode: "markers", marker: { size: 4 } } : {}),
    note: (chart) => clipNote(chart),
  },
  {
    key: "accum",
    title: "Gradient accumulation: micro-steps and effective batch",
    match: (name) => name.startsWith("accum/"),
    ytitle: "count",
    logy: true,
  },
  {
    key: "opt",
    title: "Optimizer: momentum, Nesterov, betas per group",
    match: (name) => /^opt\/(momentum|nesterov|beta1|beta2|dampening)\//.test(name),
    ytitle: "value",
  },
  {
    key: "optlr",
    title: "Optimizer: effective step lr/(1−μ) and eps per group",
    match: (name) => name.startsWith("opt/") && !name.startsWith("opt/eps_dominance/"),
    ytitle: "value",
    logy: true,
  },
  {
    key: "epsdom",
    title: `Adam ε dominance: share of elements where ε > √v̂ (top ${EPS_DOMINANCE_TOP} layers)`,
    match: (name) => name.startsWith("opt/eps_dominance/"),
    ytitle: "share",
  },
  { key: "amp", title: "AMP loss scale", match: (name) => name === "amp/scale", ytitle: "scale", logy: true },
  {
    key: "ranktime",
    section: "ranks",
    title: "Per rank: step time (solid) and wait for input (dashed)",
    match: (name) => /^rank\/\d+\/(step_time|data_time)$/.test(name),
    ytitle: "seconds",
    style: (name, state) => rankStyle(state, name, name.endsWith("/data_time")),
  },
  {
    key: "ranknorm",
    section: "ranks",
    title: "Per rank: total gradient norm (solid) and weight norm (dashed); replicas must agree",
    match: (name) => /^rank\/\d+\/(grad_norm|weight_norm)$/.test(name),
    ytitle: "‖·‖₂",
    logy: true,
    style: (name, state) => rankStyle(state, name, name.endsWith("/weight_norm")),
    note: (chart) => replicaNote(chart),
  },
  {
    key: "rankmem",
    section: "ranks",
    title: "Per rank: peak CUDA memory allocated",
    match: (name) => /^rank\/\d+\/cuda_max_allocated$/.test(name),
    ytitle: "bytes",
    style: (name, state) => rankStyle(state, name, false),
  },
  {
    key: "ranklog",
    section: "ranks",
    title: "Per rank: metrics logged on ranks other than 0",
    match: (name) => /^rank\/\d+\//.test(name),
    ytitle: "value",
  },
];

/** One colour per rank across the per-rank panels; the second quantity of a panel dashed. */
function rankStyle(state, name, dashed) {
  const rank = name.split("/")[1];
  if (!state.rankColour.has(rank)) {
    state.rankColour.set(rank, PALETTE[state.rankColour.size % PALETTE.length]);
  }
  const color = state.rankColour.get(rank);
  return { line: { color, dash: dashed ? "dash" : "solid" }, marker: { color } };
}
/** The 0/1 clipped series a chart holds: the clip reporter's, else the agent's measured one. */
export function clippedSeries(chart) {
  return chart.store.get("clip/clipped") || chart.store.get("clip/observed");
}

function clipNote(chart) {
  const clip = clipShare(clippedSeries(chart), CLIP_WINDOW);
  if (!clip) return "";
  return `clipped on ${(100 * clip.share).toFixed(0)}% of the last ${clip.count} logged steps`;
}

const REPLICA_TOLERANCE = 1e-5; // relative, as the server's health check

function sameValue(a, b) {
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b);
  if (a === b) return true; // equal infinities too
  return Math.abs(a - b) <= REPLICA_TOLERANCE * Math.max(Math.abs(a), Math.abs(b));
}

/** Whether every rank's total norms agree with rank 0's at the steps drawn, and if not, where. */
function replicaNote(chart) {
  const reference = new Map(); // stat -> Map(step -> rank 0's value)
  for (const [name, stored] of chart.store) {
    const [, rank, stat] = name.split("/");
    if (rank === "0") reference.set(stat, new Map(stored.x.map((x, i) => [x, toNumber(stored.v[i])])));
  }
  const ranks = new Set();
  let first = null;
  const differing = new Set();
  for (const [name, stored] of chart.store) {
    const [, rank, stat] = name.split("/");
    ranks.add(rank);
    const base = reference.get(stat);
    if (rank === "0" || !base) continue;
    stored.x.forEach((x, i) => {
      if (base.has(x) && !sameValue(base.get(x), toNumber(stored.v[i]))) {
        differing.add(Number(rank));
        if (first === null || x < first) first = x;
      }
    });
  }
  if (!reference.size || ranks.size < 2) return "";
  if (!differing.size) return `all ${ranks.size} ranks agree at every step drawn`;
  const names = [...differing].sort((a, b) => a - b).join(", ");
  return `rank${differing.size > 1 ? "s" : ""} ${names} differ${differing.size > 1 ? "" : "s"} from rank 0 from step ${first}`;
}
