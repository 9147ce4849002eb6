// The run page while the run is live: points from the stream extend the charts (a new layer or
// statistic redraws what needs it), status changes update the header, and the run's end closes
// the stream and asks Health for its final word.

import { FINAL_STATUSES, api } from "./api.js";
import { showError } from "./dom.js";
import { hasEnded } from "./liveness.js";
import { EPS_DOMINANCE_TOP } from "./panels.js";
import { chartFor } from "./run-cards.js";
import { showEnded, showStatus } from "./run-header.js";
import {
  noteLayerSeries,
  pickableLayers,
  refreshHistogram,
  scheduleHeatmap,
  selectLayer,
  updateLayerOptions,
} from "./run-layers.js";
import { classify, layerChartKey } from "./run-series.js";

export function setLiveState(text) {
  const node = document.getElementById("live-state");
  node.textContent = text;
  node.dataset.state = text;
}

export async function onStatus(state, status) {
  if (status === "deleted") {
    // The stream ends for good; reconnecting would only meet a 404.
    if (state.live) state.live.close();
    state.live = null;
    setLiveState("ended");
    state.health.stop();
    showError("This run was deleted.");
    return;
  }
  // Points events repeat the status; only a change is news. The latest one wins a race.
  if (status === state.streamStatus) return;
  state.streamStatus = status;
  let run = { ...state.run, status };
  if (FINAL_STATUSES.has(status)) {
    // The end time tells a run that ended (crashed too, when its process said so) from one that
    // only went silent and may still be heard from: a silent run keeps its stream open.
    try {
      run = await api.run(state.runId);
    } catch {
      // keep what the stream said
    }
    if (state.streamStatus !== status || run.status !== status) return; // changed meanwhile
  }
  state.run = run;
  showStatus(run);
  showEnded(run);
  if (hasEnded(run) && state.live) {
    state.live.close();
    state.live = null;
    setLiveState("ended");
    scheduleHeatmap(state);
    if (state.histNames.size) refreshHistogram(state);
    state.health.final(); // the final word: every point is in, and some checks wait for the end
  }
}

export function onPoints(state, data) {
  const series = (data && data.series) || {};
  let newLayers = false;
  for (const [name, columns] of Object.entries(series)) {
    const steps = columns.step || [];
    const values = columns.value || [];
    const where = classify(name, state.layers);
    if (where.layer) {
      const known = state.layerSeries.has(where.layer);
      const isNew = noteLayerSeries(state, where.stat, where.layer, name);
      newLayers = newLayers || !known;
      if (where.layer === state.selectedLayer) {
        if (isNew) {
          selectLayer(state, where.layer); // a new statistic of the layer: redraw its charts
        } else {
          state.layerCharts.get(layerChartKey(where.stat)).extend(name, steps, values);
        }
      }
      if (where.stat === state.heatmapStat) scheduleHeatmap(state);
      if (where.kind === "layer") continue;
      if (!state.epsShown.has(name)) {
        if (state.epsShown.size >= EPS_DOMINANCE_TOP) continue;
        state.epsShown.add(name);
      }
    }
    chartFor(where, state).extend(name, steps, values);
  }
  if (newLayers) {
    updateLayerOptions(state);
    if (!state.selectedLayer) selectLayer(state, pickableLayers(state)[0]);
  }
  if (Object.keys(series).length) state.health.schedule();
  if (data && data.status) onStatus(state, data.status);
}
