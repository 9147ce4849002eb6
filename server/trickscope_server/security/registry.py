"""The server's view of the tokens: a snapshot of the table, refreshed every few seconds.

Checking a request costs one SHA-256 and a dictionary lookup, never a database query; a token
created or revoked with the CLI takes effect at the next refresh (``token_cache_seconds``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread

from trickscope_server.services import tokens
from trickscope_server.storage import Database

log = logging.getLogger("trickscope_server")

ENV_TOKEN_ID = "env"  # the id under which TRICKSCOPE_TOKEN appears in sessions and grants
_USE_FLUSH_SECONDS = 60.0  # last_used_at is kept to the minute: one small write per minute


@dataclass(frozen=True)
class Grant:
    """What a request was authenticated as."""

    token_id: str
    scope: str
    secret_sha256: str

    @property
    def can_write(self) -> bool:
        return self.scope == "write"


class TokenRegistry:
    """Active tokens by digest and by id, plus the environment's write token."""

    def __init__(
        self,
        db: Database,
        *,
        env_token: str | None,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._clock = clock
        self._env = (
            Grant(ENV_TOKEN_ID, "write", tokens.secret_digest(env_token)) if env_token else None
        )
        self._by_digest: dict[str, Grant] = {}
        self._by_id: dict[str, Grant] = {}
        self._loaded_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self._used: set[str] = set()
        self._flushed_at = clock()

    @property
    def auth_required(self) -> bool:
        """True as soon as any token exists: from then on every request must carry one."""
        return self._env is not None or bool(self._by_digest)

    def load(self) -> None:
        """Read the active tokens now (blocking), and record which were used meanwhile."""
        now = self._clock()
        active = tokens.active_tokens(self._db)
        by_digest = {t.secret_sha256: Grant(t.id, t.scope, t.secret_sha256) for t in active}
        self._by_digest = by_digest
        self._by_id = {grant.token_id: grant for grant in by_digest.values()}
        self._loaded_at = now
        if self._used and now - self._flushed_at >= _USE_FLUSH_SECONDS:
            used, self._used = self._used, set()
            self._flushed_at = now
            tokens.mark_used(self._db, token_ids=used, now=time.time())

    async def refresh(self) -> None:
        """Reload off the event loop when the snapshot is older than the cache time."""
        if self._clock() - self._loaded_at < self._ttl:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._clock() - self._loaded_at < self._ttl:
                return  # another request reloaded while this one waited
            try:
                await to_thread.run_sync(self.load)
            except Exception:
                # Keep the last snapshot (fail closed on what it knew) and retry after the ttl.
                self._loaded_at = self._clock()
                log.exception("could not read the tokens table; keeping the previous copy")

    def by_secret(self, secret: str) -> Grant | None:
        """The grant of a presented secret, or None for an unknown or revoked one."""
        digest = tokens.secret_digest(secret)
        grant = self._by_digest.get(digest)
        if grant is None and self._env is not None:
            if hmac.compare_digest(digest, self._env.secret_sha256):
                grant = self._env
        if grant is not None and grant is not self._env:
            self._used.add(grant.token_id)
        return grant

    def by_id(self, token_id: str) -> Grant | None:
        """The grant of an active token id (sessions name their token by id)."""
        if token_id == ENV_TOKEN_ID:
            return self._env
        grant = self._by_id.get(token_id)
        if grant is not None:
            self._used.add(token_id)
        return grant
