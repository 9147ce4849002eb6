"""Dashboard sessions: a signed cookie naming a token, never the token's secret.

The cookie holds ``<token id>.<expiry>.<mac>``, where the MAC (HMAC-SHA256 under the server's
session key) also covers the SHA-256 of the token's secret. A revoked token's sessions stop
working with it (the id no longer resolves), and so do an environment token's sessions once
``TRICKSCOPE_TOKEN`` changes (the digest no longer matches).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE_NAME = "trickscope_session"


def new_session_key() -> bytes:
    """A random key: sessions signed with it end with the process."""
    return secrets.token_bytes(32)


def session_key(secret: str | None) -> bytes:
    """The key for a configured ``session_secret``, else a random one."""
    if not secret:
        return new_session_key()
    return hashlib.sha256(
        b"trickscope-session\0" + secret.encode("utf-8", "surrogatepass")
    ).digest()


def _mac(key: bytes, token_id: str, expires: int, secret_sha256: str) -> str:
    message = f"{token_id}.{expires}.{secret_sha256}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def issue(key: bytes, *, token_id: str, secret_sha256: str, expires: int) -> str:
    """A cookie value for a session of this token until ``expires`` (Unix seconds)."""
    return f"{token_id}.{expires}.{_mac(key, token_id, expires, secret_sha256)}"


def parse(value: str) -> tuple[str, int, str] | None:
    """``(token id, expiry, mac)`` of a cookie value, or None when it is malformed."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    return parts[0], int(parts[1]), parts[2]


def valid(key: bytes, *, mac: str, token_id: str, expires: int, secret_sha256: str) -> bool:
    """Whether ``mac`` signs this session (compared in constant time)."""
    return hmac.compare_digest(mac, _mac(key, token_id, expires, secret_sha256))
