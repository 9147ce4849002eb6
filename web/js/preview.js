// A static SVG line chart drawn while Plotly is still loading. Plotly's bundle takes a second or
// more to parse and run in a fresh browser on a slow machine, and the REST reads are in long
// before: the preview shows the same points (gaps and non-finite markers included) at once, and
// the Plotly chart replaces it when ready. Text goes through textContent only: names are
// untrusted.

import { nonFiniteLabel, toNumber } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 320; // as the Plotly layout
const MARGIN = { l: 56, r: 16, t: 16, b: 56 };
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
const NONFINITE_COLOR = "#d62728";

function node(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

function label(value) {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  return abs >= 1e4 || abs < 1e-3 ? value.toExponential(1) : String(Number(value.toPrecision(4)));
}

/**
 * Draw `series` ({name, step, value} reads) into `div` as an SVG; false (and nothing drawn) when
 * there is no finite point. Options: logy (log10 y axis; non-positive values are left out).
 */
export function drawPreview(div, series, { logy = false } = {}) {
  const lines = [];
  const nonfinite = [];
  let xlo = Infinity;
  let xhi = -Infinity;
  let ylo = Infinity;
  let yhi = -Infinity;
  for (const item of series) {
    const steps = item.step || [];
    const values = item.value || [];
    const points = [];
    for (let i = 0; i < steps.length; i += 1) {
      xlo = Math.min(xlo, steps[i]);
      xhi = Math.max(xhi, steps[i]);
      if (nonFiniteLabel(values[i])) {
        nonfinite.push(steps[i]);
        points.push(null);
        continue;
      }
      let y = toNumber(values[i]);
      if (logy) y = y > 0 ? Math.log10(y) : null;
      if (y === null) {
        points.push(null);
        continue;
      }
      ylo = Math.min(ylo, y);
      yhi = Math.max(yhi, y);
      points.push([steps[i], y]);
    }
    lines.push({ name: item.name, points });
  }
  if (!(yhi >= ylo)) return false;
  if (xhi === xlo) [xlo, xhi] = [xlo - 1, xhi + 1];
  if (yhi === ylo) [ylo, yhi] = [ylo - 1, yhi + 1];
  const pad = (yhi - ylo) * 0.05;
  [ylo, yhi] = [ylo - pad, yhi + pad];

  const width = Math.max(div.clientWidth, 320);
  const plotW = width - MARGIN.l - MARGIN.r;
  const plotH = HEIGHT - MARGIN.t - MARGIN.b;
  const sx = (x) => MARGIN.l + ((x - xlo) / (xhi - xlo)) * plotW;
  const sy = (y) => MARGIN.t + (1 - (y - ylo) / (yhi - ylo)) * plotH;
  const svg = node("svg", { width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img" });
  svg.classList.add("chart-preview");

  const axis = { stroke: "#d1d5db", "stroke-width": 1 };
  for (const t of niceTicks(ylo, yhi)) {
    svg.append(node("line", { x1: MARGIN.l, x2: width - MARGIN.r, y1: sy(t), y2: sy(t), ...axis }));
    const text = logy ? `1e${Math.round(t)}` : label(t);
    svg.append(node("text", { x: MARGIN.l - 6, y: sy(t) + 4, "text-anchor": "end", "font-size": 11, fill: "#444" }, text));
  }
  for (const t of niceTicks(xlo, xhi)) {
    const x = sx(t);
    svg.append(node("text", { x, y: HEIGHT - MARGIN.b + 16, "text-anchor": "middle", "font-size": 11, fill: "#444" }, label(t)));
  }
  lines.forEach((line, index) => {
    const color = COLORS[index % COLORS.length];
    let path = "";
    let pen = false;
    for (const point of line.points) {
      if (point === null) {
        pen = false;
        continue;
      }
      path += `${pen ? "L" : "M"}${sx(point[0]).toFixed(1)},${sy(point[1]).toFixed(1)}`;
      pen = true;
    }
    if (path) svg.append(node("path", { d: path, fill: "none", stroke: color, "stroke-width": 1.6 }));
    svg.append(node("text", { x: MARGIN.l + index * 160, y: HEIGHT - 12, "font-size": 11, fill: color }, line.name));
  });
  for (const step of nonfinite) {
    svg.append(node("text", { x: sx(step), y: MARGIN.t + 10, "text-anchor": "middle", "font-size": 13, fill: NONFINITE_COLOR }, "×"));
  }
  div.replaceChildren(svg);
  div.dataset.preview = "true";
  return true;
}

/** Remove a preview before Plotly draws into `div`. */
export function clearPreview(div) {
  if (div.dataset.preview) {
    div.replaceChildren();
    delete div.dataset.preview;
  }
}
