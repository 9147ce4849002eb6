// Live updates over Server-Sent Events. The browser resends Last-Event-ID on reconnect, so the
// server resumes exactly after the last chunk this page received.

import { api } from "./api.js";

/**
 * Open the run's event stream after `cursor` (the ingest sequence the REST reads saw).
 * Handlers: onPoints({series, status}), onStatus(status), onState("live"|"reconnecting"|"closed").
 * Returns an object with close().
 */
export function openLive(runId, cursor, { onPoints, onStatus, onState }) {
  const source = new EventSource(api.eventsUrl(runId, cursor));
  const state = (value) => {
    if (onState) onState(value);
  };
  source.addEventListener("open", () => state("live"));
  source.addEventListener("error", () => {
    state(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  });
  source.addEventListener("points", (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (onPoints) onPoints(data);
  });
  source.addEventListener("status", (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (onStatus && data && data.status) onStatus(data.status);
  });
  return {
    close() {
      source.close();
      state("closed");
    },
  };
}
