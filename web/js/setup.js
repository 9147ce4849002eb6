// The run page's Setup card: what trickscope saw of the training setup (the run's `setup`
// document, docs/diagnosis.md §1) plus two facts only the measured series know: backward passes
// per optimizer step and whether clipping happened. The health rules read the same document, so
// this card is where a user checks that trickscope saw the setup they meant. All values are
// untrusted: text nodes only.

import { formatValue, toNumber } from "./api.js";
import { el } from "./dom.js";

const DECAY_KINDS = ["norm", "bias", "embedding"]; // decaying these is the usual pitfall
const KIND_SHORT = { norm: "norm", bias: "bias", embedding: "emb." };
const INLINE_BLOCKS = 4; // DropPath blocks listed inline; more fold into a list

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function num(value) {
  const number = toNumber(value);
  return number === null ? null : number;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** Whether the document says anything: {} (no setup reported) and old servers' absent key do not. */
export function hasSetup(setup) {
  return isObject(setup) && Object.keys(setup).length > 0;
}

function optimizerText(optimizer) {
  if (!isObject(optimizer)) return "not seen";
  const parts = [String(optimizer.class || "unknown")];
  if (optimizer.module) parts.push(`(${optimizer.module})`);
  return parts.join(" ");
}

function schedulerText(scheduler) {
  if (!isObject(scheduler)) return "none seen";
  const parts = [String(scheduler.class || "unknown")];
  if (num(scheduler.planned_steps) !== null) parts.push(`${formatValue(scheduler.planned_steps)} planned steps`);
  if (num(scheduler.warmup_steps) !== null) parts.push(`warmup ${formatValue(scheduler.warmup_steps)}`);
  return parts.join(" \u00B7 ");
}

const PLANNED_SOURCE = { watch: "from watch(total_steps=)", scheduler: "from the scheduler" };

function plannedText(setup) {
  const steps = num(setup.planned_steps);
  if (steps === null) return "unknown";
  const source = PLANNED_SOURCE[setup.planned_steps_source];
  return `${formatValue(steps)} steps${source ? ` (${source})` : ""}`;
}

function scalerText(scaler) {
  if (!isObject(scaler)) return "none seen";
  return `${scaler.class || "unknown"}${scaler.enabled === false ? " (disabled)" : ""}`;
}

function emaText(ema) {
  if (!isObject(ema)) return "none seen";
  const parts = [String(ema.class || "unknown")];
  const decay = num(ema.decay);
  if (decay === null) {
    parts.push("decay unknown");
  } else {
    parts.push(`decay ${formatValue(decay)}`);
    // The EMA averages over about 1/(1 − decay) steps: its horizon.
    if (decay < 1) parts.push(`horizon \u2248${formatValue(Math.round(1 / (1 - decay)))} steps`);
  }
  return parts.join(" \u00B7 ");
}

/** DropPath: count and rate range inline; the blocks and their rates listed (folded when many). */
function dropPathNodes(blocks) {
  if (!Array.isArray(blocks) || !blocks.length) return [el("span", { text: "none seen" })];
  const rates = blocks.map((block) => num(block && block.rate)).filter((rate) => rate !== null);
  const range = rates.length
    ? ` \u00B7 rate ${formatValue(Math.min(...rates))}\u2026${formatValue(Math.max(...rates))}`
    : "";
  const items = blocks.map((block) =>
    el("li", {}, [
      el("span", { className: "mono", text: String((block && (block.parent || block.module)) || "?") }),
      ` ${formatValue(block && block.rate)}`,
    ]),
  );
  const list = el("ul", { className: "setup-blocks" }, items);
  const head = `${plural(blocks.length, "block")}${range}`;
  if (blocks.length <= INLINE_BLOCKS) return [el("span", { text: head }), list];
  return [el("details", { className: "setup-more" }, [el("summary", { text: head }), list])];
}

function accumText(passes) {
  if (passes === null || passes === undefined) return "not measured";
  const count = num(passes);
  if (count === null || !Number.isFinite(count)) return "not measured";
  return `${count} backward pass${count === 1 ? "" : "es"} per optimizer step (latest)`;
}

function clipText(clip) {
  if (!clip || !clip.count) return "not measured";
  if (!clip.clipped) return `not observed (${plural(clip.count, "step")} seen)`;
  return `observed on ${(100 * clip.share).toFixed(0)}% of steps (${clip.clipped} of ${clip.count} seen)`;
}

function cadenceText(setup) {
  const parts = [];
  if (num(setup.every) !== null) parts.push(`statistics every ${formatValue(setup.every)} steps`);
  if (num(setup.hist_every) !== null) parts.push(`histograms every ${formatValue(setup.hist_every)}`);
  return parts.join(" \u00B7 ") || "unknown";
}

// ---- param groups -------------------------------------------------------------------------

/** Parameter names per group index, from the groups' own lists, else from `params`. */
function groupParams(setup, group) {
  if (Array.isArray(group.params)) return group.params.map(String);
  const params = Array.isArray(setup.params) ? setup.params : [];
  return params.filter((param) => isObject(param) && param.group === group.index).map((param) => String(param.name));
}

/** Of a group's parameters, the norm / bias / embedding ones (decayed when the group decays). */
function kindsOf(setup, names) {
  const kind = new Map();
  for (const param of Array.isArray(setup.params) ? setup.params : []) {
    if (isObject(param)) kind.set(String(param.name), param.kind);
  }
  const byKind = new Map(DECAY_KINDS.map((name) => [name, []]));
  for (const name of names) {
    if (byKind.has(kind.get(name))) byKind.get(kind.get(name)).push(name);
  }
  return byKind;
}

function decayText(group) {
  const wd = num(group.weight_decay);
  if (wd === null) return "\u2014";
  if (wd === 0) return "0";
  const style = group.decoupled === true ? "decoupled" : group.decoupled === false ? "L2" : "";
  return `${formatValue(wd)}${style ? ` ${style}` : ""}`;
}

function momentumText(group) {
  const momentum = num(group.momentum);
  if (momentum === null) return "\u2014";
  return `${formatValue(momentum)}${group.nesterov ? " nesterov" : ""}`;
}

function betasText(group) {
  return Array.isArray(group.betas) ? group.betas.map(formatValue).join(", ") : "\u2014";
}

/** "3 norm · 2 bias" decayed, or "none"; the names on hover. */
function decayedCell(setup, group, names) {
  const wd = num(group.weight_decay);
  if (wd === null || wd === 0) return el("td", { className: "muted", text: "none" });
  const byKind = kindsOf(setup, names);
  const parts = [];
  const decayed = [];
  for (const [kind, members] of byKind) {
    if (!members.length) continue;
    parts.push(`${members.length} ${KIND_SHORT[kind]}`);
    decayed.push(...members);
  }
  if (!parts.length) return el("td", { className: "muted", text: "none" });
  return el("td", {
    className: "setup-decayed",
    text: parts.join(" \u00B7 "),
    title: decayed.join("\n"),
    dataset: { count: String(decayed.length) },
  });
}

const COLUMNS = [
  { head: "group", cell: (group) => String(group.index ?? "?") },
  { head: "tensors", cell: (group, names) => String(names.length) },
  { head: "lr", cell: (group) => formatValue(group.lr) },
  { head: "betas", cell: betasText, optional: (group) => Array.isArray(group.betas) },
  { head: "eps", cell: (group) => formatValue(group.eps), optional: (group) => num(group.eps) !== null },
  { head: "weight decay", cell: decayText },
  { head: "momentum", cell: momentumText, optional: (group) => num(group.momentum) !== null },
];

/** One row per param group; columns no group has (betas for SGD, momentum for Adam) left out. */
function groupsTable(setup, groups) {
  const columns = COLUMNS.filter((column) => !column.optional || groups.some(column.optional));
  const head = el("tr", {}, [
    ...columns.map((column) => el("th", { text: column.head, attrs: { scope: "col" } })),
    el("th", {
      text: "decayed",
      title: "norm weights, biases and embeddings in a group with weight decay",
      attrs: { scope: "col" },
    }),
  ]);
  const rows = groups.map((group) => {
    const names = groupParams(setup, group);
    return el("tr", { dataset: { group: String(group.index ?? "") } }, [
      ...columns.map((column) => el("td", { text: column.cell(group, names) })),
      decayedCell(setup, group, names),
    ]);
  });
  return el("table", { className: "setup-groups" }, [el("thead", {}, [head]), el("tbody", {}, rows)]);
}

// ---- card ---------------------------------------------------------------------------------

/**
 * The folded card's one line: "AdamW · OneCycleLR, warmup 300 · EMA 0.999 · AMP · clipped 50%".
 */
function setupBrief(setup, optimizer, facts) {
  const brief = [optimizer ? String(optimizer.class || "") : ""];
  const scheduler = isObject(setup.scheduler) ? setup.scheduler : null;
  if (scheduler) {
    const warmup = num(scheduler.warmup_steps);
    brief.push(`${scheduler.class || "scheduler"}${warmup ? `, warmup ${formatValue(warmup)}` : ""}`);
  }
  if (isObject(setup.ema)) {
    const decay = num(setup.ema.decay);
    brief.push(decay === null ? "EMA" : `EMA ${formatValue(decay)}`);
  }
  if (isObject(setup.scaler) && setup.scaler.enabled !== false) brief.push("AMP");
  if (facts.clip && facts.clip.count && facts.clip.clipped) {
    brief.push(`clipped ${(100 * facts.clip.share).toFixed(0)}%`);
  }
  return brief.filter(Boolean).join(" \u00B7 ");
}

function fact(key, label, value) {
  const nodes = typeof value === "string" ? [el("span", { text: value })] : value;
  return el("div", { dataset: { fact: key } }, [el("dt", { text: label }), el("dd", {}, nodes)]);
}

/**
 * Fill the card. `facts` = {backwardPasses, clip: {share, clipped, count} | null} from the
 * measured series (accum/backward_passes, clip/observed); they change while the run is live,
 * the document does not, so the page calls this again with new facts.
 */
export function renderSetup(root, setup, facts = {}) {
  const body = root.querySelector("#setup-body");
  const summary = root.querySelector("#setup-summary");
  if (!hasSetup(setup)) {
    root.hidden = true;
    root.dataset.state = "none";
    return;
  }
  root.hidden = false;
  root.dataset.state = "shown";
  const optimizer = isObject(setup.optimizer) ? setup.optimizer : null;
  const groups = optimizer && Array.isArray(optimizer.groups) ? optimizer.groups.filter(isObject) : [];
  const groupCount = groups.length ? ` \u00B7 ${plural(groups.length, "param group")}` : "";
  const rows = [
    fact("optimizer", "Optimizer", optimizerText(optimizer) + groupCount),
    fact("scheduler", "Scheduler", schedulerText(setup.scheduler)),
    fact("planned", "Planned", plannedText(setup)),
    fact("ema", "EMA", emaText(setup.ema)),
    fact("scaler", "AMP scaler", scalerText(setup.scaler)),
    fact("drop_path", "DropPath", dropPathNodes(setup.drop_path)),
    fact("accum", "Accumulation", accumText(facts.backwardPasses)),
    fact("clip", "Clipping", clipText(facts.clip)),
    fact("cadence", "Sampling", cadenceText(setup)),
  ];
  const nodes = [el("dl", { className: "setup-facts" }, rows)];
  if (groups.length) nodes.push(groupsTable(setup, groups));
  body.replaceChildren(...nodes);
  if (summary) summary.textContent = setupBrief(setup, optimizer, facts);
}
