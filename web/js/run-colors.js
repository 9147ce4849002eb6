// One colour per run, the same on every chart of a page: the first ten are Plotly's defaults,
// the next ones spread around the colour wheel.

const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];

/** The colour of the run at `index` in the page's order. */
export function runColor(index) {
  if (index < PALETTE.length) return PALETTE[index];
  const hue = Math.round((index * 137.508) % 360); // the golden angle: neighbours stay apart
  return `hsl(${hue}, 65%, 42%)`;
}
