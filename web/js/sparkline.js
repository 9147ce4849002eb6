// An inline SVG sparkline of a run's main metric (a few dozen points read in one batched
// request for the whole table). Non-finite values break the line; the last point is a dot.

import { formatValue, toNumber } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 26;
const PAD = 2;

function svgNode(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/**
 * The path of `steps`/`values` scaled into the box: "M x y L x y ..." with a new "M" after each
 * gap (a non-finite value). Returns {d, drawn, last} (drawn: vertices, last: the last vertex).
 */
export function sparkPath(steps, values, width = WIDTH, height = HEIGHT) {
  const points = [];
  for (let i = 0; i < steps.length; i += 1) {
    const y = toNumber(values[i]);
    points.push(y !== null && Number.isFinite(y) ? [steps[i], y] : null);
  }
  const finite = points.filter(Boolean);
  if (!finite.length) return { d: "", drawn: 0, last: null };
  const xs = finite.map((p) => p[0]);
  const ys = finite.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => (x1 > x0 ? PAD + ((x - x0) / (x1 - x0)) * (width - 2 * PAD) : width / 2);
  const sy = (y) => (y1 > y0 ? height - PAD - ((y - y0) / (y1 - y0)) * (height - 2 * PAD) : height / 2);
  const parts = [];
  let pen = "M";
  let last = null;
  for (const point of points) {
    if (!point) {
      pen = "M";
      continue;
    }
    last = [sx(point[0]), sy(point[1])];
    parts.push(`${pen}${last[0].toFixed(1)} ${last[1].toFixed(1)}`);
    pen = "L";
  }
  return { d: parts.join(" "), drawn: finite.length, last };
}

/** An SVG sparkline of one run's answer from /sparklines ({name, step, value, total}). */
export function sparkline(line) {
  const steps = line.step || [];
  const values = line.value || [];
  const { d, drawn, last } = sparkPath(steps, values);
  const svg = svgNode("svg", {
    class: "sparkline",
    width: WIDTH,
    height: HEIGHT,
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": `${line.name} over ${steps.length} points`,
  });
  svg.dataset.points = String(drawn);
  svg.dataset.name = line.name || "";
  const title = svgNode("title", {});
  const lastValue = values.length ? formatValue(values[values.length - 1]) : "\u2014";
  title.textContent = `${line.name}: ${lastValue} at step ${steps[steps.length - 1] ?? "\u2014"}`;
  svg.append(title);
  if (d) svg.append(svgNode("path", { d, class: "spark-line" }));
  if (last) svg.append(svgNode("circle", { cx: last[0], cy: last[1], r: 1.8, class: "spark-end" }));
  return svg;
}
