"""Who may talk to the server: tokens, dashboard sessions, the Host check and security headers.

Everything here runs before the routes, in one ASGI middleware (``guard.py``), so a new route is
protected without declaring anything: reads need a ``read`` token, writes a ``write`` token.
"""

from trickscope_server.security.auth import Authenticator
from trickscope_server.security.guard import SecurityGuard
from trickscope_server.security.hosts import HostPolicy, is_loopback_bind
from trickscope_server.security.registry import Grant, TokenRegistry

__all__ = [
    "Authenticator",
    "Grant",
    "HostPolicy",
    "SecurityGuard",
    "TokenRegistry",
    "is_loopback_bind",
]
