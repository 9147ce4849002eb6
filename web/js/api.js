// REST client for /api/v1: JSON fetches, RFC 9457 problem errors, non-finite token conversion.

const BASE = "/api/v1";

/** An HTTP error from the API, carrying the problem-details body when there is one. */
export class ApiError extends Error {
  constructor(status, problem, url) {
    const title = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(`${title} (${url})`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }
}

async function getJSON(path, params) {
  const query = new URLSearchParams();
  // Array values repeat the parameter (tag=a&tag=b), as the run-history filters expect.
  for (const [key, value] of Object.entries(params || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") query.append(key, String(item));
    }
  }
  const qs = query.toString();
  const url = `${BASE}${path}${qs ? `?${qs}` : ""}`;
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (response.status === 401) {
    // The session ended (expired, logged out elsewhere, or its token revoked): log in again.
    const here = window.location.pathname + window.location.search;
    window.location.assign(`/login?next=${encodeURIComponent(here)}`);
  }
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      problem = null;
    }
    throw new ApiError(response.status, problem, url);
  }
  return response.json();
}

const enc = encodeURIComponent;

export const api = {
  runs: (params) => getJSON("/runs", params),
  run: (runId) => getJSON(`/runs/${enc(runId)}`),
  series: (runId) => getJSON(`/runs/${enc(runId)}/series`),
  points: (runId, name, points, start, end) =>
    getJSON(`/runs/${enc(runId)}/points`, { name, points, start, end }),
  heatmap: (runId, stat, points) => getJSON(`/runs/${enc(runId)}/heatmap`, { stat, points }),
  health: (runId) => getJSON(`/runs/${enc(runId)}/health`),
  histogramNames: (runId) => getJSON(`/runs/${enc(runId)}/histograms/names`),
  histograms: (runId, name, points) => getJSON(`/runs/${enc(runId)}/histograms`, { name, points }),
  compare: (runIds, name, points, start, end) =>
    getJSON("/compare/series", { runs: runIds.join(","), name, points, start, end }),
  sparklines: (runIds, names, points) =>
    getJSON("/sparklines", { runs: runIds.join(","), name: names, points }),
  eventsUrl: (runId, after) => `${BASE}/runs/${enc(runId)}/events?after=${enc(after)}`,
};

const TOKENS = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/** A read value (number, "NaN", "Infinity", "-Infinity" or null) as a JS number or null. */
export function toNumber(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "number") return value;
  if (Object.prototype.hasOwnProperty.call(TOKENS, value)) return TOKENS[value];
  const number = Number(value);
  return Number.isNaN(number) ? NaN : number;
}

/** "NaN", "+Inf" or "−Inf" for a non-finite value, null for a finite one or a missing one. */
export function nonFiniteLabel(value) {
  const number = toNumber(value);
  if (number === null || Number.isFinite(number)) return null;
  if (Number.isNaN(number)) return "NaN";
  return number > 0 ? "+Inf" : "\u2212Inf";
}

/** A value for people: 4 significant digits, tokens spelled out. */
export function formatValue(value) {
  const number = toNumber(value);
  if (number === null) return "\u2014";
  const label = nonFiniteLabel(number);
  if (label) return label;
  if (number !== 0 && (Math.abs(number) >= 1e5 || Math.abs(number) < 1e-3)) {
    return number.toExponential(3);
  }
  return String(Number(number.toPrecision(4)));
}

/** An ISO 8601 time from the API (UTC) in the browser's local time zone. */
export function formatTime(iso) {
  if (!iso) return "\u2014";
  // A timestamp without a zone designator is UTC by contract; Date would read it as local.
  const text = /(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export const FINAL_STATUSES = new Set(["finished", "failed", "crashed"]);

/** The loss to show for a run: `loss`, then `loss/train`, then any key starting with `loss`. */
export function lastLoss(latest) {
  if (!latest || typeof latest !== "object") return undefined;
  if ("loss" in latest) return latest.loss;
  if ("loss/train" in latest) return latest["loss/train"];
  const key = Object.keys(latest)
    .filter((name) => name.startsWith("loss"))
    .sort()[0];
  return key === undefined ? undefined : latest[key];
}
