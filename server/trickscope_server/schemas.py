"""Response models of the REST API (the wire package holds the request payloads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

FloatOrToken = float | str  # non-finite floats travel as "NaN", "Infinity", "-Infinity"


class SeriesRange(BaseModel):
    """The smallest and largest finite value of a series (None: it has no finite value)."""

    min: float | None
    max: float | None


class RunOut(BaseModel):
    """A run with the last value of each of its non-per-layer series."""

    id: str
    project: str
    name: str
    status: str = Field(
        description="running; finished or failed (the run ended and said so); crashed: the "
        "training process said so, or a running run sent no request (heartbeat, points, ...) "
        "for TRICKSCOPE_LIVENESS_GRACE_SECONDS (default 120 s). A silent run's crashed is "
        "judged when read, so its next request shows it running again."
    )
    config: dict[str, Any]
    tags: list[str]
    system: dict[str, Any]
    layers: list[str]
    ranks: dict[str, dict[str, Any]]  # a distributed run's ranks ("0", "1", ...): host, process
    setup: dict[str, Any]  # what the agent saw of the training setup; {} when none was declared
    created_at: str
    started_at: str | None
    ended_at: str | None
    updated_at: str
    # The last request of the run's training process (heartbeats included); None: never seen
    # since the server tracks liveness, so the status is the stored one.
    last_seen_at: str | None = None
    # In a listing filtered or sorted by series (``metric=``, ``sort=metric:``), also the latest
    # value of each of those series the run has points of, per-layer ones included.
    latest: dict[str, FloatOrToken | None]
    # From the series summaries kept at ingest (no point is read): the largest last step of the
    # run's non-per-layer series, and each such series' min and max over its finite values.
    last_step: int | None = None
    summary: dict[str, SeriesRange] = Field(default_factory=dict)


class RunPage(BaseModel):
    """One page of runs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    runs: list[RunOut]
    next_cursor: str | None


class SeriesOut(BaseModel):
    """A series and its summary (min/max over finite values)."""

    name: str
    count: int
    first_step: int | None
    last_step: int | None
    last_value: FloatOrToken | None
    min_value: float | None
    max_value: float | None
    first_nonfinite_step: int | None


class SeriesList(BaseModel):
    """All series of a run, by name."""

    series: list[SeriesOut]


class SeriesPoints(BaseModel):
    """Columns of one series in a step window, downsampled to the requested budget."""

    name: str
    step: list[int]
    value: list[FloatOrToken]
    wall_time: list[FloatOrToken] | None  # only with ``wall_time=true``
    downsampled: bool
    total: int
    cursor: int


class RunSeriesPoints(SeriesPoints):
    """``SeriesPoints`` of one run of a comparison."""

    run_id: str


class CompareSeries(BaseModel):
    """The same series of several runs (``GET /compare/series``)."""

    name: str
    runs: list[RunSeriesPoints]


class Sparkline(BaseModel):
    """One run's main series, thinned for an inline chart; ``name`` None: none of the asked
    names exists in the run (or the run does not exist), and the columns are empty."""

    run_id: str
    name: str | None
    step: list[int]
    value: list[FloatOrToken]
    total: int


class Sparklines(BaseModel):
    """The first present series of ``names`` for each run (``GET /sparklines``)."""

    names: list[str]
    runs: list[Sparkline]


class Histograms(BaseModel):
    """Histograms of one name over steps: ``counts[step_index][bin]`` over ``[lo, hi]``.

    ``bins`` is the most bins of any; a histogram with fewer (``row_bins``) is padded with zeros.
    """

    name: str
    bins: int
    step: list[int]
    row_bins: list[int]
    lo: list[FloatOrToken]
    hi: list[FloatOrToken]
    counts: list[list[float]]
    nonfinite: list[float]


class HistogramNames(BaseModel):
    """Names of a run's histograms."""

    names: list[str]


class Heatmap(BaseModel):
    """One statistic over layers (model order) and steps: ``z[layer_index][step_index]``."""

    stat: str
    layers: list[str]
    step: list[int]
    z: list[list[FloatOrToken | None]]
    downsampled: bool


class IngestResult(BaseModel):
    """The answer to a point batch. ``followed``: someone follows the run live (a dashboard or a
    client's stream), so its points are worth sending at once; the agent sends every
    ``flush_secs`` then, and every ``unfollowed_flush_secs`` otherwise."""

    accepted: int
    duplicate: bool
    followed: bool = False


class FollowedOut(BaseModel):
    """Whether someone follows the run live: a stream of its points (a dashboard's run page, a
    client's ``follow``) is open in some worker."""

    followed: bool
    glanced: bool = Field(
        default=False,
        description="A held wait only: someone glanced at the run without following it (the "
        "runs list showed it). The agent sends what it holds now and keeps its slow cadence.",
    )


class FindingOut(BaseModel):
    """One health finding: what went wrong, where and when, why it matters, what to try."""

    check: str
    severity: str  # "error", "warning" or "info"
    title: str
    detail: str  # why + " " + remedy, for clients that show one paragraph
    why: str
    remedy: str
    step: int | None
    layer: str | None
    evidence: dict[str, Any]
    source: str  # "server" or "agent" (found inside the training process)


class CheckOut(BaseModel):
    """One health check: whether it ran on this run, and if not, why."""

    id: str
    title: str
    status: str  # "ran" or "skipped"
    reason: str | None
    findings: int


class BandOut(BaseModel):
    """A range a health rule calls healthy, and the rule of thumb inside it."""

    low: float
    high: float
    typical: float | None = None


class HealthReport(BaseModel):
    """A run's health findings, most severe first, and the checks that ran or were skipped."""

    findings: list[FindingOut]
    checks: list[CheckOut]
    # What the rules judge by, for charts to shade the same: {"update_ratio": {low, high, ...}}.
    bands: dict[str, BandOut] = {}
