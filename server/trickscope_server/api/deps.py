"""Dependencies as ``Annotated`` aliases: the settings, database and broadcaster of the app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from trickscope_server.config import Settings
from trickscope_server.live import Broadcaster
from trickscope_server.services.limits import INT64_MAX, INT64_MIN
from trickscope_server.storage import Database


# The dependencies are ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hop per dependency per request that costs more than the attribute read it wraps.
async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.db
    return db


async def get_broadcaster(request: Request) -> Broadcaster:
    """The app's live-update broadcaster."""
    broadcaster: Broadcaster = request.app.state.broadcaster
    return broadcaster


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
BroadcasterDep = Annotated[Broadcaster, Depends(get_broadcaster)]
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RunId = Annotated[
    str,
    Path(
        pattern=RUN_ID_PATTERN,
        description="Client-chosen run id (the agent uses uuid4().hex).",
    ),
]
# Integer query parameters stay within int64: a larger one would overflow in the database.
Step = Annotated[int, Query(ge=INT64_MIN, le=INT64_MAX, description="A training step.")]
Budget = Annotated[
    int,
    Query(ge=INT64_MIN, le=INT64_MAX, description="Points to return at most (3 to the cap)."),
]


def note_reader(run_id: RunId, request: Request) -> None:
    """A read of one run's data counts as following the run live (see
    :mod:`trickscope_server.live.read_follows`); it never fails the read."""
    request.app.state.read_follows.looked(run_id)


FOLLOWING_READER = Depends(note_reader)
