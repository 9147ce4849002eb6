"""Queries on the access-token table (secrets are stored as their SHA-256 only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from trickscope_server.storage.models import TokenRow


def add_token(session: Session, row: TokenRow) -> None:
    """Insert a new token row."""
    session.add(row)


def all_tokens(session: Session) -> Sequence[TokenRow]:
    """Every token, revoked ones included, oldest first."""
    return session.scalars(select(TokenRow).order_by(TokenRow.created_at, TokenRow.id)).all()


def active_tokens(session: Session) -> Sequence[tuple[str, str, str]]:
    """``(id, scope, secret_sha256)`` of every token not revoked."""
    query = select(TokenRow.id, TokenRow.scope, TokenRow.secret_sha256).where(
        TokenRow.revoked_at.is_(None)
    )
    return [(row.id, row.scope, row.secret_sha256) for row in session.execute(query)]


def get_token(session: Session, token_id: str) -> TokenRow | None:
    """The token with this id, or None."""
    return session.get(TokenRow, token_id)


def mark_used(session: Session, token_ids: Iterable[str], now: float) -> None:
    """Set ``last_used_at`` of these tokens to ``now``."""
    ids = list(token_ids)
    if ids:
        session.execute(update(TokenRow).where(TokenRow.id.in_(ids)).values(last_used_at=now))
