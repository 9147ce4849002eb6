"""Queries on the access-token table (secrets are stored as their SHA-256 only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from trickscope_server.storage.models import TokenRow


def add_token(session: Session, row: TokenRow) -> None:
    """Insert a new token row."""
    session.add(row)


def all_tokens(session: Session) -> Sequence[TokenRow]:
    """Every token, revoked ones included, oldest first."""
    return session.scalars(select(TokenRow).order_by(TokenRow.created_at, TokenRow.id)).all()


def active_tokens(connection: Connection) -> list[tuple[str, str, str]]:
    """``(id, scope, secret_sha256)`` of every token not revoked.

    One fixed statement straight to the driver, without an ORM session: the security guard
    reads these before a request whenever its copy is ``token_cache_seconds`` old, which at a
    CPU's pace is before nearly every request.
    """
    rows = connection.exec_driver_sql(_ACTIVE_TOKENS)
    return [(str(token_id), str(scope), str(digest)) for token_id, scope, digest in rows]


_ACTIVE_TOKENS = "SELECT id, scope, secret_sha256 FROM tokens WHERE revoked_at IS NULL"


def get_token(session: Session, token_id: str) -> TokenRow | None:
    """The token with this id, or None."""
    return session.get(TokenRow, token_id)


def mark_used(session: Session, token_ids: Iterable[str], now: float) -> None:
    """Set ``last_used_at`` of these tokens to ``now``."""
    ids = list(token_ids)
    if ids:
        session.execute(update(TokenRow).where(TokenRow.id.in_(ids)).values(last_used_at=now))
