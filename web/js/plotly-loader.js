// Plotly is window.Plotly, read when drawing: pages may load it after the modules start (see
// plotlyReady), so the data fetches overlap Plotly's parse.

const PLOTLY_URL = "/static/vendor/plotly-cartesian-4.1.1.min.js";
let plotlyRequested;
const plotlyRequest = new Promise((resolve) => {
  plotlyRequested = resolve;
});
let plotlyLoading = null;

function scriptLoaded(script) {
  return new Promise((resolve, reject) => {
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", () => reject(new Error("Plotly failed to load")));
  });
}

/**
 * Resolves once window.Plotly exists. A page may load Plotly with a deferred <script data-plotly>
 * (the data fetches overlap its parse), or on demand: then Plotly runs only once loadPlotly() is
 * called, so that a page can draw first (parsing Plotly blocks the main thread for a second or
 * more on a cold, slow machine) while a <link rel="preload"> has already fetched it.
 */
export function plotlyReady() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  const script = document.querySelector("script[data-plotly]");
  if (script) return scriptLoaded(script);
  return plotlyRequest.then(() => {
    if (window.Plotly) return window.Plotly;
    if (!plotlyLoading) {
      const tag = document.createElement("script");
      tag.src = PLOTLY_URL;
      plotlyLoading = scriptLoaded(tag);
      document.head.append(tag);
    }
    return plotlyLoading;
  });
}

/** Let an on-demand page run Plotly now; resolves as plotlyReady(). */
export function loadPlotly() {
  plotlyRequested();
  return plotlyReady();
}
