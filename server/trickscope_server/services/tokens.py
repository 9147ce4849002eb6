"""Access tokens: create (the secret is returned once), list, revoke, and the active set.

A token's secret is random, shown to its creator once and stored only as its SHA-256, so a copy
of the database gives no way in. A ``write`` token may also read.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from trickscope_server.errors import InvalidPayloadError, NotFoundError
from trickscope_server.storage import Database
from trickscope_server.storage import tokens as store
from trickscope_server.storage.models import TokenRow

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
SECRET_PREFIX = "tsk_"  # lets secret scanners and people recognise a trickscope token


class TokenNotFoundError(NotFoundError):
    """No token has that id."""

    title = "Token not found"
    slug = "token-not-found"


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: everything but the secret, which is never stored."""

    id: str
    name: str
    scope: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class ActiveToken:
    """A token that grants access: its id, scope and the SHA-256 of its secret."""

    id: str
    scope: str
    secret_sha256: str


def secret_digest(secret: str) -> str:
    """The hex SHA-256 of a secret, as stored and as looked up."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A fresh secret: 256 random bits, URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _info(row: TokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        scope=row.scope,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def create_token(db: Database, *, scope: str, name: str = "") -> tuple[TokenInfo, str]:
    """Store a new token and return it with its secret (the only time the secret exists)."""
    if scope not in SCOPES:
        raise InvalidPayloadError(f"scope must be 'read' or 'write', not {scope!r}")
    if len(name) > 256:
        raise InvalidPayloadError(f"name is {len(name)} characters long: at most 256")
    secret = new_secret()
    row = TokenRow(
        id=uuid.uuid4().hex,
        name=name,
        scope=scope,
        secret_sha256=secret_digest(secret),
        created_at=time.time(),
        last_used_at=None,
        revoked_at=None,
    )
    with db.transaction() as session:
        store.add_token(session, row)
    return _info(row), secret


def list_tokens(db: Database) -> list[TokenInfo]:
    """Every token, revoked ones included, oldest first."""
    with db.reader() as session:
        return [_info(row) for row in store.all_tokens(session)]


def revoke_token(db: Database, *, token_id: str) -> TokenInfo:
    """Revoke a token (it stops working within the server's token cache time); idempotent."""
    with db.transaction() as session:
        row = store.get_token(session, token_id)
        if row is None:
            raise TokenNotFoundError(f"no token has id {token_id!r}: see `trickscope token list`")
        if row.revoked_at is None:
            row.revoked_at = time.time()
        return _info(row)


def active_tokens(db: Database) -> list[ActiveToken]:
    """The tokens that grant access now."""
    with db.engine.connect() as connection:
        return [ActiveToken(*fields) for fields in store.active_tokens(connection)]


def mark_used(db: Database, *, token_ids: Iterable[str], now: float) -> None:
    """Record that these tokens were used (for ``trickscope token list``)."""
    with db.transaction() as session:
        store.mark_used(session, token_ids, now)
