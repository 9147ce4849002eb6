// Test and benchmark hooks of the run page (read-only observations plus a simulated network
// drop): firstShownAt, the first chart on screen (an SVG preview or Plotly); firstChartAt, the
// first Plotly (interactive) chart; loadedAt, every initial chart drawn. Milliseconds from
// navigation.

export const hooks = { firstShownAt: null, firstChartAt: null, loadedAt: null };
window.__trickscope = hooks;

export function markShown() {
  if (hooks.firstShownAt === null) {
    hooks.firstShownAt = performance.now();
    performance.mark("trickscope:first-shown");
  }
}

export function markFirstChart() {
  markShown();
  if (hooks.firstChartAt === null) {
    hooks.firstChartAt = performance.now();
    performance.mark("trickscope:first-chart");
  }
}

/** Resolves after the next paint: what was drawn is on screen before a long task starts. */
export function nextFrame() {
  return new Promise((resolve) => {
    requestAnimationFrame(() => setTimeout(resolve, 0));
  });
}
