// Live updates over Server-Sent Events. The browser resends Last-Event-ID on reconnect, so the
// server resumes exactly after the last chunk this page received. Where the browser gives up
// (the stream closed for good, e.g. the server was down when it retried), the page opens a new
// stream itself with after=<the last id it saw>: the same cursor, so again no gap and no repeat.

import { api } from "./api.js";

const REOPEN_MS = 2000;

/**
 * Open the run's event stream after `cursor` (the ingest sequence the REST reads saw).
 * Handlers: onPoints({series, status}), onStatus(status), onHealth(report) (the server's health
 * report, pushed when it changes; servers that never send one leave the page to poll),
 * onHealthUnchanged() (the server diagnosed the run again and found what it last pushed),
 * onState("live"|"reconnecting"|"closed").
 * Returns {close(), drop(), lastId()}: drop() closes the connection and resumes from the last id,
 * as a network drop would (used by tests and by the page when the browser gives up).
 */
export function openLive(
  runId,
  cursor,
  { onPoints, onStatus, onHealth, onHealthUnchanged, onState },
) {
  let lastId = cursor;
  let source = null;
  let closed = false;
  let timer = null;
  const state = (value) => {
    if (onState) onState(value);
  };
  const parse = (event) => {
    if (event.lastEventId) {
      const id = Number(event.lastEventId);
      if (Number.isFinite(id) && id > lastId) lastId = id;
    }
    try {
      return JSON.parse(event.data);
    } catch {
      return null;
    }
  };

  function open() {
    timer = null;
    if (closed) return;
    const current = new EventSource(api.eventsUrl(runId, lastId));
    source = current;
    current.addEventListener("open", () => state("live"));
    current.addEventListener("error", () => {
      if (closed || source !== current) return;
      if (current.readyState === EventSource.CLOSED) {
        state("reconnecting");
        if (!timer) timer = window.setTimeout(open, REOPEN_MS);
      } else {
        state("reconnecting");
      }
    });
    current.addEventListener("points", (event) => {
      if (source !== current) return;
      const data = parse(event);
      if (data && onPoints) onPoints(data);
    });
    current.addEventListener("status", (event) => {
      if (source !== current) return;
      const data = parse(event);
      if (onStatus && data && data.status) onStatus(data.status);
    });
    current.addEventListener("health", (event) => {
      if (source !== current) return;
      const data = parse(event);
      if (onHealth && data && typeof data === "object") onHealth(data);
    });
    current.addEventListener("health-unchanged", () => {
      if (source === current && onHealthUnchanged) onHealthUnchanged();
    });
  }

  open();
  return {
    close() {
      closed = true;
      if (timer) window.clearTimeout(timer);
      if (source) source.close();
      source = null;
      state("closed");
    },
    drop() {
      if (closed || !source) return;
      source.close();
      source = null;
      state("reconnecting");
      open();
    },
    lastId: () => lastId,
  };
}
