"""Authentication pieces on their own: Host names, session cookies, the token cache, settings,
the serve command's refusal, and the guard's answers through the app."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from trickscope_cli.serve_cmd import exposure_refusal
from trickscope_server.app import create_app
from trickscope_server.config import Settings
from trickscope_server.security import HostPolicy, TokenRegistry, is_loopback_bind, sessions
from trickscope_server.security.hosts import host_name
from trickscope_server.services import tokens
from trickscope_server.storage import Database

pytestmark = pytest.mark.timeout(60)

ENV_SECRET = "s" * 32


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost.", "localhost"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("dash.example:443", "dash.example"),
    ],
)
def test_host_name_drops_port_brackets_case_and_final_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def test_host_policy_accepts_loopback_addresses_configured_names_and_the_bind_host() -> None:
    policy = HostPolicy(allowed_hosts=["Dash.Example"], bind_host="box.lan")
    for header in ("localhost:1", "127.0.0.1", "[::1]:9", "dash.example", "box.lan:8000"):
        assert policy.allows(header), header
    assert policy.allows("192.168.1.20:8000")  # an address: no rebinding page can send one
    assert not policy.allows("attacker.example")
    assert not policy.allows("dash.example.attacker.example")
    assert HostPolicy(allowed_hosts=["*"], bind_host="127.0.0.1").allows("anything.example")
    # Writes from a browser: the origin of a configured name (a proxy may rewrite Host), no other.
    assert policy.trusts_origin("https://dash.example")
    assert not policy.trusts_origin("http://localhost:3000")  # another local site
    assert not policy.trusts_origin("null")
    assert not HostPolicy(allowed_hosts=["*"], bind_host="0.0.0.0").trusts_origin(
        "http://x.example"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.2", False),
        ("box.lan", False),
    ],
)
def test_is_loopback_bind(host: str, loopback: bool) -> None:
    assert is_loopback_bind(host) is loopback


def test_a_session_cookie_is_bound_to_its_key_token_digest_and_expiry() -> None:
    key = sessions.new_session_key()
    value = sessions.issue(key, token_id="abc", secret_sha256="d" * 64, expires=2_000_000_000)
    parsed = sessions.parse(value)
    assert parsed is not None
    token_id, expires, mac = parsed
    assert (token_id, expires) == ("abc", 2_000_000_000)
    sign = {"mac": mac, "token_id": "abc", "expires": expires}
    assert sessions.valid(key, **sign, secret_sha256="d" * 64)
    assert not sessions.valid(key, **sign, secret_sha256="e" * 64)  # the env token changed
    assert not sessions.valid(sessions.new_session_key(), **sign, secret_sha256="d" * 64)
    assert not sessions.valid(key, **{**sign, "expires": expires + 1}, secret_sha256="d" * 64)
    for bad in ("", "a.b", "a.notanumber.c", "a.1.2.3", "a.9999999999999.c"):
        assert sessions.parse(bad) is None
    # A configured secret gives every process the same key; none gives a random one.
    assert sessions.session_key("k") == sessions.session_key("k")
    assert sessions.session_key(None) != sessions.session_key(None)


def refresh(registry: TokenRegistry) -> None:
    """``registry.refresh()`` on a loop of its own thread (the browser tests' Playwright keeps a
    loop running on the main thread when the suites run together)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, registry.refresh()).result()


def test_the_registry_sees_new_and_revoked_tokens_only_after_its_cache_time(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    db.upgrade()
    now = [100.0]
    registry = TokenRegistry(db, env_token=None, ttl_seconds=2.0, clock=lambda: now[0])
    registry.load()
    assert not registry.auth_required
    info, secret = tokens.create_token(db, scope="read", name="r")
    assert registry.by_secret(secret) is None  # cached: no query per request

    now[0] += 1.0
    refresh(registry)
    assert registry.by_secret(secret) is None  # still within the cache time
    now[0] += 1.5
    refresh(registry)
    grant = registry.by_secret(secret)
    assert grant is not None and grant.scope == "read" and not grant.can_write
    assert registry.auth_required and registry.by_id(info.id) == grant

    tokens.revoke_token(db, token_id=info.id)
    now[0] += 2.5
    refresh(registry)
    assert registry.by_secret(secret) is None and registry.by_id(info.id) is None
    assert not registry.auth_required
    db.dispose()


def test_the_environment_token_is_a_write_token_and_tokens_are_stored_hashed(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    db.upgrade()
    registry = TokenRegistry(db, env_token=ENV_SECRET, ttl_seconds=2.0)
    registry.load()
    grant = registry.by_secret(ENV_SECRET)
    assert grant is not None and grant.can_write and grant.token_id == "env"
    assert registry.by_secret(ENV_SECRET[:-1]) is None
    _, secret = tokens.create_token(db, scope="write")
    raw = (tmp_path / "t.db").read_bytes() + (tmp_path / "t.db-wal").read_bytes()
    assert secret.encode() not in raw and tokens.secret_digest(secret).encode() in raw
    with pytest.raises(Exception, match="scope must be"):
        tokens.create_token(db, scope="admin")
    db.dispose()


def test_settings_read_allowed_hosts_as_a_list_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRICKSCOPE_ALLOWED_HOSTS", "a.example, b.example")
    assert Settings().allowed_hosts == ["a.example", "b.example"]
    monkeypatch.setenv("TRICKSCOPE_ALLOWED_HOSTS", '["c.example"]')
    assert Settings().allowed_hosts == ["c.example"]
    monkeypatch.setenv("TRICKSCOPE_TOKEN", "")
    assert Settings().env_token() is None
    monkeypatch.setenv("TRICKSCOPE_TOKEN", ENV_SECRET)
    assert Settings().env_token() == ENV_SECRET
    assert ENV_SECRET not in repr(Settings())


def test_serve_refuses_an_exposed_bind_without_a_token_unless_insecure() -> None:
    exposed = Settings(database_url="sqlite://", host="0.0.0.0")
    refusal = exposure_refusal(exposed, auth_required=False)
    assert refusal is not None and "--insecure" in refusal and "token create" in refusal
    assert exposure_refusal(exposed, auth_required=True) is None
    insecure = Settings(database_url="sqlite://", host="0.0.0.0", insecure=True)
    assert exposure_refusal(insecure, auth_required=False) is None
    local = Settings(database_url="sqlite://", host="127.0.0.1")
    assert exposure_refusal(local, auth_required=False) is None
    weak = Settings(database_url="sqlite://", host="0.0.0.0", token="short")
    assert "fewer than 16" in (exposure_refusal(weak, auth_required=True) or "")


@pytest.fixture
def secured(settings: Settings) -> TestClient:
    app = create_app(settings.model_copy(update={"token": SecretStr(ENV_SECRET)}))
    return TestClient(app, base_url="http://127.0.0.1:8000", follow_redirects=False)


def test_pages_send_a_browser_without_a_session_to_the_login_page(secured: TestClient) -> None:
    response = secured.get("/runs/r1?x=1&y=2")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fruns%2Fr1%3Fx%3D1%26y%3D2"
    # The API answers a problem instead (scripts and agents must not follow a redirect).
    api = secured.get("/api/v1/runs")
    assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer")
    assert secured.get("/openapi.json").status_code == 401


def test_a_forged_or_foreign_session_cookie_is_refused(secured: TestClient) -> None:
    login = secured.post("/api/v1/session", json={"token": ENV_SECRET})
    assert login.status_code == 200
    good = secured.cookies[sessions.COOKIE_NAME]
    token_id, expires, mac = good.split(".")
    forged = [
        f"{token_id}.{int(expires) + 10}.{mac}",  # a longer life, same signature
        f"{token_id}.{expires}.{'0' * 64}",
        f"env.{int(time.time()) - 10}.{mac}",  # expired
        "garbage",
    ]
    for value in forged:
        secured.cookies.clear()
        secured.cookies.set(sessions.COOKIE_NAME, value)
        assert secured.get("/api/v1/runs").status_code == 401, value
    secured.cookies.clear()
    secured.cookies.set(sessions.COOKIE_NAME, good)
    assert secured.get("/api/v1/runs").status_code == 200
    assert secured.post("/api/v1/session", json={"token": "nope"}).status_code == 401


def test_writes_from_another_origin_are_refused_even_with_a_session(
    secured: TestClient,
) -> None:
    secured.post("/api/v1/session", json={"token": ENV_SECRET})
    body = {"project": "p", "name": "n"}
    other = secured.put("/api/v1/runs/r1", json=body, headers={"Origin": "http://evil.example"})
    assert other.status_code == 403 and other.json()["type"].endswith("cross-origin")
    null = secured.put("/api/v1/runs/r1", json=body, headers={"Origin": "null"})
    assert null.status_code == 403
    same = secured.put("/api/v1/runs/r1", json=body, headers={"Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 200
    # A configured name (allowed_hosts: testserver) is this server as a reverse proxy presents it.
    proxied = secured.put("/api/v1/runs/r1", json=body, headers={"Origin": "https://testserver"})
    assert proxied.status_code == 200


def test_every_answer_carries_the_security_headers(secured: TestClient) -> None:
    for path in ("/healthz", "/api/v1/runs", "/login", "/static/app.js"):
        response = secured.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        assert "access-control-allow-origin" not in response.headers, path


def test_the_api_page_loads_swagger_ui_from_this_server(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 't.db'}"))
    client = TestClient(app, base_url="http://127.0.0.1")
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http" not in page.text.replace('"http-equiv', "")  # nothing from another site
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/static/vendor/swagger-ui/{asset}").status_code == 200
    assert client.get("/static/vendor/swagger-ui/index.html").status_code == 404
    assert client.get("/redoc").status_code == 404
    app.state.db.dispose()
