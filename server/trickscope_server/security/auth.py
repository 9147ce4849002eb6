"""Turning what a request presents (a bearer token or a session cookie) into a grant."""

from __future__ import annotations

import time

from trickscope_server.security import sessions
from trickscope_server.security.registry import Grant, TokenRegistry


class Authenticator:
    """Checks bearer tokens and session cookies against the token registry."""

    def __init__(
        self, registry: TokenRegistry, *, session_key: bytes, session_seconds: int
    ) -> None:
        self.registry = registry
        self.session_key = session_key
        self.session_seconds = session_seconds

    def bearer(self, authorization: str) -> Grant | None:
        """The grant of an ``Authorization: Bearer <secret>`` header, or None."""
        kind, _, secret = authorization.strip().partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            return None
        return self.registry.by_secret(secret.strip())

    def session(self, cookie: str | None) -> Grant | None:
        """The grant of a session cookie value, or None when missing, expired, forged or revoked."""
        parsed = sessions.parse(cookie) if cookie else None
        if parsed is None:
            return None
        token_id, expires, mac = parsed
        if expires < time.time():
            return None
        grant = self.registry.by_id(token_id)
        if grant is None:
            return None
        signed = sessions.valid(
            self.session_key,
            mac=mac,
            token_id=token_id,
            expires=expires,
            secret_sha256=grant.secret_sha256,
        )
        return grant if signed else None

    def new_session(self, grant: Grant) -> str:
        """A session cookie value for ``grant``, valid for ``session_seconds``."""
        expires = int(time.time()) + self.session_seconds
        return sessions.issue(
            self.session_key,
            token_id=grant.token_id,
            secret_sha256=grant.secret_sha256,
            expires=expires,
        )
