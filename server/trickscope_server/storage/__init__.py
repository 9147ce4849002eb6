"""Persistence: the only layer that imports SQLAlchemy."""

from sqlalchemy.orm import Session

from trickscope_server.storage.database import Database, upgrade_database
from trickscope_server.storage.models import BatchRow, ChunkRow, RunRow, SeriesRow

__all__ = ["BatchRow", "ChunkRow", "Database", "RunRow", "SeriesRow", "Session", "upgrade_database"]
