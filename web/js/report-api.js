// The data source of a `trickscope report` file: the same calls as api.js's `api`, answered from
// the run's data written inline in the file (<script type="application/json"
// id="trickscope-data">), so the run page's own modules draw the report with no server. The
// report's module loader gives this module to every page module that imports "./api.js".

import { ApiError } from "./api.js";

export * from "./api.js";

const data = JSON.parse(document.getElementById("trickscope-data").textContent);

function missing(what) {
  return Promise.reject(new ApiError(404, { detail: `${what} is not in this report` }, what));
}

/** A read cut to the steps in [start, end] (a zoomed chart's window), or whole. */
function windowOf(read, start, end) {
  if (start === undefined && end === undefined) return read;
  const lo = start === undefined ? -Infinity : start;
  const hi = end === undefined ? Infinity : end;
  const keep = read.step.map((step) => step >= lo && step <= hi);
  return {
    ...read,
    step: read.step.filter((_, i) => keep[i]),
    value: read.value.filter((_, i) => keep[i]),
  };
}

export const api = {
  offline: true, // no live stream: the page shows the run as it was when the file was written
  run: () => Promise.resolve(data.run),
  series: () => Promise.resolve({ series: data.series }),
  histogramNames: () => Promise.resolve({ names: Object.keys(data.histograms) }),
  health: () => Promise.resolve(data.health),
  points: (runId, name, points, start, end) => {
    const read = data.points[name];
    return read ? Promise.resolve(windowOf(read, start, end)) : missing(`series ${name}`);
  },
  heatmap: (runId, stat) => {
    const read = data.heatmaps[stat];
    return Promise.resolve(read || { stat, layers: [], step: [], z: [], downsampled: false });
  },
  histograms: (runId, name) => {
    const read = data.histograms[name];
    return read ? Promise.resolve(read) : missing(`histograms ${name}`);
  },
};
