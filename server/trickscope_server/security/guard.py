"""The one middleware in front of every route: Host, origin, token and content-type checks.

In order, each failing with a problem response:

1. ``Host`` must name this server (421): DNS rebinding.
2. A write from a browser must come from this origin, or one named in ``allowed_hosts`` (403):
   cross-site requests.
3. When the server has any token, the request must carry one, as ``Authorization: Bearer`` or
   the dashboard's session cookie (401; a page without one is sent to ``/login``), and a write
   needs a ``write`` token (403).
4. A body must be ``application/json`` (415): an HTML form or a ``text/plain`` fetch from another
   site needs no CORS preflight, and must not be parsed as JSON.

Every response then gets the security headers of ``headers.py``. CORS stays closed: no
``Access-Control-*`` header is ever sent, so other origins can neither read nor preflight.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trickscope_server.api.problems import problem
from trickscope_server.security import sessions
from trickscope_server.security.auth import Authenticator
from trickscope_server.security.headers import with_security_headers
from trickscope_server.security.hosts import HostPolicy

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/login"
SESSION_PATH = "/api/v1/session"
# Reachable without a token: the probe, the login page and route, and the dashboard's code
# (static files hold no run data).
OPEN_PATHS = frozenset({"/healthz", LOGIN_PATH, SESSION_PATH})
OPEN_PREFIXES = ("/static/",)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _is_page(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and not path.startswith("/api/") and path != "/openapi.json"


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in headers


def _is_json(headers: Headers) -> bool:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


def _same_origin(origin: str, host: str | None) -> bool:
    if origin == "null" or host is None:
        return False
    return urlsplit(origin).netloc.lower() == host.strip().lower()


class SecurityGuard:
    """ASGI middleware: see the module docstring for the checks and their order."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator,
        hosts: HostPolicy,
    ) -> None:
        self.app = app
        self.auth = auth
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])))
            await send(message)

        refusal = await self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _refusal(self, scope: Scope) -> Response | None:
        """The response that refuses this request, or None to let it through."""
        path: str = scope["path"]
        method: str = scope["method"]
        headers = Headers(scope=scope)
        host = headers.get("host")
        if path != "/healthz" and not self.hosts.allows(host):
            return self._problem(
                scope,
                421,
                "Misdirected request",
                "unknown-host",
                f"this server does not answer to Host {host!r:.80}: add the name to "
                "TRICKSCOPE_ALLOWED_HOSTS (or --allowed-host) if it is this server's",
            )
        origin = headers.get("origin")
        if (
            method not in SAFE_METHODS
            and origin is not None
            and not (_same_origin(origin, host) or self.hosts.trusts_origin(origin))
        ):
            return self._problem(
                scope,
                403,
                "Cross-origin request",
                "cross-origin",
                f"writes from another origin ({origin!r:.80}) are refused",
            )
        await self.auth.registry.refresh()
        if self.auth.registry.auth_required and not _is_open(path):
            refusal = self._authenticate(scope, headers, method, path)
            if refusal is not None:
                return refusal
        if method not in SAFE_METHODS and _has_body(headers) and not _is_json(headers):
            content_type = headers.get("content-type")
            return self._problem(
                scope,
                415,
                "Unsupported media type",
                "unsupported-media-type",
                f"a request body must be sent as Content-Type: application/json, "
                f"not {content_type!r:.80}",
            )
        return None

    def _authenticate(
        self, scope: Scope, headers: Headers, method: str, path: str
    ) -> Response | None:
        authorization = headers.get("authorization")
        if authorization is not None:
            grant = self.auth.bearer(authorization)
            if grant is None:
                return self._unauthorized(scope, "the token is unknown, revoked or malformed")
        else:
            grant = self.auth.session(Request(scope).cookies.get(sessions.COOKIE_NAME))
            if grant is None:
                if _is_page(method, path):
                    query = scope["query_string"].decode("latin-1")
                    target = f"{path}?{query}" if query else path
                    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", 303)
                return self._unauthorized(
                    scope,
                    "this server requires a token: send Authorization: Bearer <token> "
                    "(TRICKSCOPE_TOKEN for the agent) or log in to the dashboard",
                )
        if method not in SAFE_METHODS and not grant.can_write:
            return self._problem(
                scope,
                403,
                "Forbidden",
                "read-only-token",
                "this token may only read: writes need a token created with --scope write",
            )
        scope.setdefault("state", {})["grant"] = grant
        return None

    def _unauthorized(self, scope: Scope, detail: str) -> Response:
        return self._problem(
            scope,
            401,
            "Unauthorized",
            "unauthorized",
            detail,
            headers={"WWW-Authenticate": 'Bearer realm="trickscope"'},
        )

    @staticmethod
    def _problem(
        scope: Scope,
        status: int,
        title: str,
        slug: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return problem(
            Request(scope), status=status, title=title, slug=slug, detail=detail, headers=headers
        )
