"""The dashboard's session: log in with a token once, then a cookie carries it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from trickscope_server.api.responses import OrjsonResponse
from trickscope_server.errors import TrickscopeError
from trickscope_server.security import Authenticator
from trickscope_server.security.sessions import COOKIE_NAME

router = APIRouter(prefix="/api/v1", tags=["session"])


class UnauthorizedError(TrickscopeError):
    """The presented token is unknown or revoked."""

    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


@dataclass
class Login:
    """The token to log in with, as created by ``trickscope token create``."""

    token: str


@dataclass
class SessionState:
    """Whether the server asks for a token, and what this request is logged in as."""

    auth_required: bool
    logged_in: bool
    scope: str | None


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


@router.get("/session", response_model=SessionState)
def get_session(request: Request) -> SessionState:
    """The dashboard asks this before showing its log-out button."""
    auth = _auth(request)
    grant = auth.session(request.cookies.get(COOKIE_NAME))
    return SessionState(
        auth_required=auth.registry.auth_required,
        logged_in=grant is not None,
        scope=grant.scope if grant else None,
    )


@router.post("/session", response_model=SessionState)
def post_session(payload: Login, request: Request) -> Response:
    """Log in: a valid token sets the session cookie (HttpOnly, SameSite=Strict)."""
    auth = _auth(request)
    grant = auth.bearer(f"Bearer {payload.token}")
    if grant is None:
        raise UnauthorizedError("the token is unknown or revoked")
    response = OrjsonResponse({"auth_required": True, "logged_in": True, "scope": grant.scope})
    response.set_cookie(
        COOKIE_NAME,
        auth.new_session(grant),
        max_age=auth.session_seconds,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.delete("/session", status_code=204, response_class=Response)
def delete_session(request: Request) -> Response:
    """Log out: the cookie is cleared."""
    response = Response(status_code=204)
    response.delete_cookie(
        COOKIE_NAME,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
