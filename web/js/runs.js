// The runs page: a filterable table of runs that refreshes itself (live status).

import { api, formatTime, formatValue, lastLoss } from "./api.js";
import { clearError, el, showError, statusBadge } from "./dom.js";

const REFRESH_MS = 3000;
const LIMIT = 100;

const projectSelect = document.getElementById("filter-project");
const statusSelect = document.getElementById("filter-status");
const knownProjects = new Set();
let inFlight = false;
let pending = false;

function filtersFromUrl() {
  const params = new URLSearchParams(window.location.search);
  return { project: params.get("project") || "", status: params.get("status") || "" };
}

function filtersToUrl() {
  const params = new URLSearchParams();
  if (projectSelect.value) params.set("project", projectSelect.value);
  if (statusSelect.value) params.set("status", statusSelect.value);
  const qs = params.toString();
  window.history.replaceState(null, "", qs ? `?${qs}` : window.location.pathname);
}

function updateProjectOptions(selected) {
  const projects = [...knownProjects].sort((a, b) => a.localeCompare(b));
  const current = [...projectSelect.options].slice(1).map((option) => option.value);
  if (current.length === projects.length && current.every((p, i) => p === projects[i])) return;
  projectSelect.replaceChildren(
    el("option", { text: "all projects", attrs: { value: "" } }),
    ...projects.map((project) => el("option", { text: project, attrs: { value: project } })),
  );
  projectSelect.value = selected;
}

function runRow(run) {
  const href = `/runs/${encodeURIComponent(run.id)}`;
  const loss = lastLoss(run.latest);
  return el("tr", { dataset: { runId: run.id, status: run.status || "" } }, [
    el("td", { text: run.project }),
    el("td", {}, [el("a", { href, text: run.name || run.id, className: "run-link" })]),
    el("td", {}, [statusBadge(run.status)]),
    el("td", { text: formatTime(run.started_at || run.created_at) }),
    el("td", { className: "num mono", text: loss === undefined ? "\u2014" : formatValue(loss) }),
  ]);
}

function render(runs, anyRuns) {
  const table = document.getElementById("runs-table");
  const body = document.getElementById("runs-body");
  body.replaceChildren(...runs.map(runRow));
  table.hidden = runs.length === 0;
  document.getElementById("empty-state").hidden = anyRuns;
  document.getElementById("no-match").hidden = !anyRuns || runs.length > 0;
  document.body.dataset.loaded = "true";
}

async function refresh() {
  if (inFlight) {
    pending = true;
    return;
  }
  inFlight = true;
  try {
    const project = projectSelect.value;
    const status = statusSelect.value;
    const filtered = Boolean(project || status);
    // The unfiltered page feeds the project list; the filtered one feeds the table.
    const [all, page] = await Promise.all([
      api.runs({ limit: LIMIT }),
      filtered ? api.runs({ project, status, limit: LIMIT }) : null,
    ]);
    for (const run of all.runs || []) if (run.project) knownProjects.add(run.project);
    if (project) knownProjects.add(project);
    updateProjectOptions(project);
    const runs = ((page || all).runs || []).filter(
      (run) => (!project || run.project === project) && (!status || run.status === status),
    );
    render(runs, (all.runs || []).length > 0);
    document.getElementById("refresh-note").textContent =
      `updated ${new Date().toLocaleTimeString()}`;
    clearError();
  } catch (error) {
    showError(`Could not load runs: ${error.message}`);
  } finally {
    inFlight = false;
    if (pending) {
      pending = false;
      refresh();
    }
  }
}

function start() {
  const initial = filtersFromUrl();
  if (initial.project) knownProjects.add(initial.project);
  updateProjectOptions(initial.project);
  statusSelect.value = initial.status;
  for (const select of [projectSelect, statusSelect]) {
    select.addEventListener("change", () => {
      filtersToUrl();
      refresh();
    });
  }
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
  refresh();
  window.setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
}

start();
