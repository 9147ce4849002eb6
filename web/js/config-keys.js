// Run configs as flat dotted keys, and the keys whose values differ between runs: the runs
// table names runs by them, the compare page keeps them on top.

/** A nested config flattened to dotted keys; arrays, scalars and empty objects are leaves. */
export function flatten(object, prefix = "", out = {}) {
  if (object && typeof object === "object" && !Array.isArray(object)) {
    const entries = Object.entries(object);
    if (!entries.length && prefix) out[prefix] = object;
    for (const [key, value] of entries) flatten(value, prefix ? `${prefix}.${key}` : key, out);
  } else if (prefix) {
    out[prefix] = object;
  }
  return out;
}

/** A config value as text: strings bare, everything else as JSON, a missing one as a dash. */
export function valueText(value) {
  if (value === undefined) return "\u2014";
  if (value === null) return "null";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The keys whose values differ between the configs (a key missing from one differs), sorted. */
export function differingKeys(configs) {
  const flat = configs.map((config) => flatten(config || {}));
  const keys = new Set(flat.flatMap((item) => Object.keys(item)));
  return [...keys].sort().filter((key) => {
    const texts = flat.map((item) => (key in item ? JSON.stringify(item[key]) : undefined));
    return texts.some((text) => text !== texts[0]);
  });
}

/** Rows of the keys that differ: {key, values} with one value per config (undefined: absent). */
export function configDifferences(configs) {
  const flat = configs.map((config) => flatten(config || {}));
  return differingKeys(configs).map((key) => ({ key, values: flat.map((item) => item[key]) }));
}

const MAX_NAME_KEYS = 3;
const MAX_VALUE_CHARS = 24;

/**
 * The differing keys that name a run, as "key=value" strings: at most three, scalars only (a
 * list or a nested value says little in a name), long values cut.
 */
export function nameParts(config, keys) {
  const flat = flatten(config || {});
  const parts = [];
  for (const key of keys) {
    if (parts.length === MAX_NAME_KEYS) break;
    const value = flat[key];
    if (value === undefined || (value !== null && typeof value === "object")) continue;
    let text = valueText(value);
    if (text.length > MAX_VALUE_CHARS) text = `${text.slice(0, MAX_VALUE_CHARS - 1)}\u2026`;
    parts.push(`${key}=${text}`);
  }
  return parts;
}
