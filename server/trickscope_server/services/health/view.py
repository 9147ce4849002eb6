"""The stored run as a :class:`RunView`: summaries read once, series lazily in the session."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.services.health.engine import Diagnosis, diagnose
from trickscope_server.services.health.model import Summary
from trickscope_server.services.health.updates import update_ratio_band
from trickscope_server.services.heatmap import LayerGrid, load_layer_grid
from trickscope_server.services.query import load_series
from trickscope_server.services.runs import require_run
from trickscope_server.storage import Database, RunRow, Session
from trickscope_server.storage import points as points_store
from trickscope_server.storage import runs as run_store
from trickscope_server.storage.runs import StoredSeries

HEALTH_POINTS = 2000  # per series: enough for windows of WINDOW samples, extremes kept


class StoredRun:
    """A :class:`RunView` over the database, valid while its session is open."""

    def __init__(
        self, session: Session, run: RunRow, rows: list[StoredSeries], cursor: int
    ) -> None:
        self.session = session
        self.run = run
        self.status = run.status
        self.config: Mapping[str, Any] = run.config
        self.setup: Mapping[str, Any] = run.setup or {}
        self.agent_findings: Mapping[str, Mapping[str, Any]] = run.agent_findings or {}
        self.layers: Sequence[str] = list(run.layers)
        self.ranks: Mapping[str, Mapping[str, Any]] = run.ranks
        self._layer_set = set(self.layers)
        self._ids = {row.name: row.id for row in rows}
        self._cursor = cursor
        self._grids: dict[str, LayerGrid] = {}
        self.summaries: Mapping[str, Summary] = {
            row.name: Summary(
                count=row.count,
                last_step=row.last_step,
                # SQLite stores NaN as NULL: a NULL last value of a series with points is NaN.
                last_value=math.nan if row.last_value is None and row.count else row.last_value,
                first_nonfinite_step=row.first_nonfinite_step,
            )
            for row in rows
        }

    def series(self, name: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Steps and values of a series, downsampled to HEALTH_POINTS keeping extremes."""
        stat, _, layer = name.partition("/")
        if layer not in self._layer_set:
            # A deeper prefix of one series a layer (opt/eps_dominance/<layer>): a grid too.
            stat, _, layer = name.rpartition("/")
        if stat and layer in self._layer_set:
            # Per-layer series come a statistic at a time, all layers in one query.
            grid = self._grids.get(stat)
            if grid is None:
                grid = self._grids[stat] = load_layer_grid(
                    self.session,
                    run_id=self.run.id,
                    stat=stat,
                    declared=list(self.layers),
                    points=HEALTH_POINTS,
                )
            if layer not in grid.rows:  # a series without points
                return np.empty(0, np.int64), np.empty(0, np.float64)
            row = grid.rows[layer]
            filled = grid.filled[row]
            return grid.steps[filled], grid.cells[row][filled]
        return load_series(
            self.session,
            run_id=self.run.id,
            name=name,
            series_id=self._ids[name],
            cursor=self._cursor,
            points=HEALTH_POINTS,
        )


def diagnose_run(db: Database, *, run_id: str) -> Diagnosis:
    """Every health finding of a stored run (most severe first) and what each check did."""
    with db.reader() as session:
        run = require_run(session, run_id)
        rows = run_store.series_of_runs(session, [run_id])
        view = StoredRun(session, run, rows, points_store.run_seq(session, run_id=run_id))
        return diagnose(view)


def health_report(db: Database, *, run_id: str) -> dict[str, Any]:
    """The ``/health`` body of a stored run: findings, checks, and the bands the rules judge by.

    ``bands`` lets a chart shade exactly what a rule calls healthy (the run page's update-ratio
    chart), so the two cannot drift apart.
    """
    diagnosis = diagnose_run(db, run_id=run_id)
    return {
        "findings": [f.as_dict() for f in diagnosis.findings],
        "checks": [c.as_dict() for c in diagnosis.checks],
        "bands": {"update_ratio": update_ratio_band()},
    }
