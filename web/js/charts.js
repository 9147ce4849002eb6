// The dashboard's Plotly charts, one module each; this module gathers them for the pages.

export { EMPTY_NOTE, PLOT_CONFIG, findingShapes, findingTrace, plotlyText, splitPoints } from "./chart-base.js";
export { HeatmapChart, heatmapTraces } from "./heatmap.js";
export { HistogramChart, histogramTraces } from "./histogram.js";
export { LineChart } from "./line-chart.js";
export { loadPlotly, plotlyReady } from "./plotly-loader.js";
export { ratioBandShapes, spanShape } from "./shapes.js";
