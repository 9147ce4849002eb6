"""Run resources: create/update, layers, finish, read, list, delete, series and chart reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from trickscope_server.api.deps import (
    FOLLOWING_READER,
    Budget,
    DatabaseDep,
    RunId,
    SettingsDep,
    Step,
)
from trickscope_server.api.encoding import DecodingRoute
from trickscope_server.api.responses import OrjsonResponse
from trickscope_server.schemas import (
    CompareSeries,
    HealthReport,
    Heatmap,
    HistogramNames,
    Histograms,
    RunOut,
    RunPage,
    SeriesList,
    SeriesPoints,
    Sparklines,
)
from trickscope_server.services import declare, export, health, limits, query, runs
from trickscope_server.services.limits import Limits
from trickscope_wire import (
    FindingsDeclare,
    LayersDeclare,
    RankDeclare,
    RunCreate,
    RunFinish,
    SetupDeclare,
)

router = APIRouter(prefix="/api/v1", tags=["runs"], route_class=DecodingRoute)


@router.put("/runs/{run_id}", response_model=RunOut)
def put_run(run_id: RunId, payload: RunCreate, db: DatabaseDep, settings: SettingsDep) -> RunOut:
    """Create a run, or update its metadata (idempotent)."""
    limits.check_run_create(payload, Limits.of(settings))
    return runs.upsert_run(db, run_id=run_id, payload=payload)


@router.put("/runs/{run_id}/layers", response_model=RunOut)
def put_layers(
    run_id: RunId, payload: LayersDeclare, db: DatabaseDep, settings: SettingsDep
) -> RunOut:
    """Declare the model's parameter names in model order."""
    limits.check_layers(payload, Limits.of(settings))
    return runs.declare_layers(db, run_id=run_id, payload=payload)


@router.put("/runs/{run_id}/ranks/{rank}", response_model=RunOut)
def put_rank(
    run_id: RunId,
    rank: Annotated[int, Path(ge=0, le=runs.MAX_RANK, description="The rank in the job.")],
    payload: RankDeclare,
    db: DatabaseDep,
    settings: SettingsDep,
) -> RunOut:
    """Declare one rank of a distributed run: its host and process."""
    limits.check_rank(payload, Limits.of(settings))
    return runs.declare_rank(db, run_id=run_id, rank=rank, payload=payload)


@router.put("/runs/{run_id}/setup", response_model=RunOut)
def put_setup(
    run_id: RunId, payload: SetupDeclare, db: DatabaseDep, settings: SettingsDep
) -> RunOut:
    """Declare the training setup the agent saw (replaces the previous one)."""
    limits.check_setup(payload, Limits.of(settings))
    return declare.declare_setup(db, run_id=run_id, payload=payload)


@router.put("/runs/{run_id}/findings", response_model=RunOut)
def put_findings(
    run_id: RunId, payload: FindingsDeclare, db: DatabaseDep, settings: SettingsDep
) -> RunOut:
    """Merge health findings made inside the training process, one per (check, layer)."""
    limits.check_findings(payload, Limits.of(settings))
    return declare.declare_findings(db, run_id=run_id, payload=payload)


@router.post("/runs/{run_id}/finish", response_model=RunOut)
def post_finish(run_id: RunId, payload: RunFinish, db: DatabaseDep) -> RunOut:
    """Set the run's final status."""
    limits.check_finish(payload)
    return runs.finish_run(db, run_id=run_id, payload=payload)


@router.get("/runs/{run_id}/health", response_model=HealthReport, dependencies=[FOLLOWING_READER])
def get_health(run_id: RunId, db: DatabaseDep) -> Response:
    """Trick-aware health findings (first NaN layer, exploding gradients, warmup, EMA, ...)."""
    return OrjsonResponse(health.health_report(db, run_id=run_id))


@router.get("/runs", response_model=RunPage)
def get_runs(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    project: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=runs.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    tag: Annotated[list[str] | None, Query(max_length=256)] = None,
    config: Annotated[list[str] | None, Query(max_length=1024)] = None,
    metric: Annotated[list[str] | None, Query(max_length=1024)] = None,
    sort: Annotated[str, Query(max_length=600)] = "-created_at",
) -> RunPage:
    """Runs filtered and sorted; pass ``next_cursor`` as ``cursor`` for the next page.

    ``tag`` (all must match), ``config=<dotted.key>:<value>``, ``metric=<name><op><number>``
    repeat; ``sort`` is created_at, name, status, config:<key> or metric:<name>, ``-`` for
    descending.

    ``status`` is running, finished, failed or crashed. A running run that sent no request for
    ``liveness_grace_seconds`` (default 120) is listed, filtered and sorted as crashed until it
    is heard from again.

    Each running run listed is glanced at: its agent, if it holds points while nobody follows
    the run, sends them now (at most every 10 s), so a list refreshed every few seconds shows
    fresh progress without following every run it shows.
    """
    page = runs.list_runs(
        db,
        project=project,
        status=status,
        limit=limit,
        cursor=cursor,
        tags=tag,
        config=config,
        metrics=metric,
        sort=sort,
        grace_seconds=settings.liveness_grace_seconds,
    )
    request.app.state.read_follows.glanced(run.id for run in page.runs if run.status == "running")
    return page


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: RunId, request: Request, db: DatabaseDep, settings: SettingsDep) -> RunOut:
    """One run with the latest value of each of its (non-per-layer) series.

    A running run that sent no request for ``liveness_grace_seconds`` reads as crashed. A
    running run is glanced at, as the runs list does: its agent sends what it holds now.
    """
    run = runs.get_run(db, run_id=run_id, grace_seconds=settings.liveness_grace_seconds)
    if run.status == "running":
        request.app.state.read_follows.glanced([run_id])
    return run


@router.delete("/runs/{run_id}", status_code=204, response_class=Response)
def delete_run(run_id: RunId, db: DatabaseDep) -> Response:
    """Delete a run and everything it owns."""
    runs.delete_run(db, run_id=run_id)
    return Response(status_code=204)


@router.get("/runs/{run_id}/series", response_model=SeriesList)
def get_series(run_id: RunId, db: DatabaseDep) -> SeriesList:
    """The run's series with their summaries."""
    return runs.list_series(db, run_id=run_id)


@router.get("/runs/{run_id}/points", response_model=SeriesPoints, dependencies=[FOLLOWING_READER])
def get_points(
    run_id: RunId,
    db: DatabaseDep,
    settings: SettingsDep,
    name: Annotated[str, Query(min_length=1, max_length=512)],
    start: Step | None = None,
    end: Step | None = None,
    points: Budget | None = None,
    wall_time: bool = False,
) -> Response:
    """One series in a step window, downsampled to ``points`` (exact when it fits)."""
    body = query.read_points(
        db,
        run_id=run_id,
        name=name,
        start=start,
        end=end,
        points=points if points is not None else settings.default_points,
        max_points=settings.max_points,
        wall_time=wall_time,
    )
    return OrjsonResponse(body)


@router.get("/runs/{run_id}/histograms", response_model=Histograms, dependencies=[FOLLOWING_READER])
def get_histograms(
    run_id: RunId,
    db: DatabaseDep,
    settings: SettingsDep,
    name: Annotated[str, Query(min_length=1, max_length=512)],
    points: Budget | None = None,
) -> Response:
    """Histograms of one name (e.g. ``grad_hist/fc.weight``), thinned evenly over steps."""
    body = query.read_histograms(
        db,
        run_id=run_id,
        name=name,
        points=points if points is not None else 100,
        max_points=settings.max_points,
    )
    return OrjsonResponse(body)


@router.get("/runs/{run_id}/histograms/names", response_model=HistogramNames)
def get_histogram_names(run_id: RunId, db: DatabaseDep) -> HistogramNames:
    """Names of the run's histograms."""
    return HistogramNames(names=query.list_histograms(db, run_id=run_id))


@router.get("/compare/series", response_model=CompareSeries)
def get_compare_series(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    runs_: Annotated[str, Query(alias="runs", min_length=1, max_length=4096)],
    name: Annotated[str, Query(min_length=1, max_length=512)],
    start: Step | None = None,
    end: Step | None = None,
    points: Budget | None = None,
) -> Response:
    """One series of several runs (``runs=a,b,...``), each downsampled to ``points``.

    Like a read of one run's data, it counts as following each running run it names: their
    agents send what they hold, and keep their fast cadence while the comparison is read."""
    run_ids = list(dict.fromkeys(r.strip() for r in runs_.split(",")))
    body = query.read_compare(
        db,
        run_ids=run_ids,
        name=name,
        start=start,
        end=end,
        points=points if points is not None else settings.default_points,
        max_points=settings.max_points,
    )
    for run_id in run_ids:  # all found: an unknown one was a 404 above
        if run_id:
            request.app.state.read_follows.looked(run_id)
    return OrjsonResponse(body)


@router.get("/sparklines", response_model=Sparklines)
def get_sparklines(
    db: DatabaseDep,
    runs_: Annotated[str, Query(alias="runs", min_length=1, max_length=16384)],
    name: Annotated[list[str], Query()],
    points: Annotated[int, Query(ge=3, le=query.MAX_SPARKLINE_POINTS)] = 48,
) -> Response:
    """Each run's first present series of ``name`` (repeat it: the names to try, in order),
    thinned to ``points`` for an inline chart: ``runs=a,b,...``, up to a page of runs."""
    body = query.read_sparklines(
        db, run_ids=[r.strip() for r in runs_.split(",")], names=name, points=points
    )
    return OrjsonResponse(body)


@router.get("/runs/{run_id}/heatmap", response_model=Heatmap, dependencies=[FOLLOWING_READER])
def get_heatmap(
    run_id: RunId,
    db: DatabaseDep,
    settings: SettingsDep,
    stat: Annotated[str, Query(min_length=1, max_length=256)],
    points: Budget | None = None,
) -> Response:
    """One statistic over all layers (model order) and steps."""
    body = query.read_heatmap(
        db,
        run_id=run_id,
        stat=stat,
        points=points if points is not None else settings.default_points,
        max_points=settings.max_points,
    )
    return OrjsonResponse(body)


@router.get(
    "/runs/{run_id}/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def get_export_csv(run_id: RunId, db: DatabaseDep) -> StreamingResponse:
    """Every point of the run as CSV (``series,step,value,wall_time``), streamed."""
    return StreamingResponse(
        export.export_csv(db, run_id=run_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.csv"'},
    )


@router.get(
    "/runs/{run_id}/export.parquet",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/vnd.apache.parquet": {}}}},
)
def get_export_parquet(run_id: RunId, db: DatabaseDep) -> StreamingResponse:
    """Every point of the run as Parquet (the CSV's columns), streamed in row groups."""
    return StreamingResponse(
        export.export_parquet(db, run_id=run_id),
        media_type="application/vnd.apache.parquet",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.parquet"'},
    )
