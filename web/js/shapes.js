// Layout shapes drawn behind a chart's lines: the update-ratio band, a shaded step span.

/**
 * Shapes for the update-to-weight ratio: the band the health rule calls healthy, shaded, and a
 * dashed line at its rule of thumb. `band` is the health report's {low, high, typical} (the
 * server's one source of truth); none yet, no shapes. The chart's y axis is logarithmic.
 */
export function ratioBandShapes(band) {
  if (!band || !Number.isFinite(band.low) || !Number.isFinite(band.high)) return [];
  const shapes = [
    {
      type: "rect",
      xref: "paper",
      x0: 0,
      x1: 1,
      yref: "y",
      y0: band.low,
      y1: band.high,
      fillcolor: "rgba(21, 128, 61, 0.08)",
      line: { width: 0 },
      layer: "below",
      name: "band",
    },
  ];
  if (Number.isFinite(band.typical)) {
    shapes.push({
      type: "line",
      xref: "paper",
      x0: 0,
      x1: 1,
      yref: "y",
      y0: band.typical,
      y1: band.typical,
      line: { color: "rgba(21, 128, 61, 0.7)", width: 1.2, dash: "dash" },
      name: "typical",
    });
  }
  return shapes;
}

/** A shaded x span (e.g. the warmup steps) over the whole plot height. */
export function spanShape(x0, x1) {
  return {
    type: "rect",
    xref: "x",
    x0,
    x1,
    yref: "paper",
    y0: 0,
    y1: 1,
    fillcolor: "rgba(37, 99, 235, 0.08)",
    line: { width: 0 },
    layer: "below",
  };
}
