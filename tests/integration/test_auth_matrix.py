"""Authentication over real HTTP: every route of the app against every kind of credential.

A real ``trickscope serve`` process on a real SQLite file; tokens are created and revoked with
the real ``trickscope token`` command. The route list comes from the app itself, so a route added
later without a probe here fails :func:`test_every_route_has_a_probe`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import LiveServer, free_port, start_server, stop_server, wait_until
from trickscope_server.api.pages import plotly_bundle, plotly_version
from trickscope_server.app import create_app
from trickscope_server.config import Settings, default_web_dir
from trickscope_wire import (
    HistogramColumns,
    PointBatch,
    SeriesColumns,
    dumps,
    encode_f64,
    encode_i64,
)

pytestmark = pytest.mark.timeout(180)

SEEDED = "seeded"  # the run every read probe reads
JSON = {"Content-Type": "application/json"}
PLOTLY_URL = (
    f"/static/vendor/plotly-cartesian-{plotly_version(plotly_bundle(default_web_dir()))}.min.js"
)


def trickscope_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real ``trickscope`` command line."""
    return subprocess.run(
        [sys.executable, "-m", "trickscope_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def create_token(db_url: str, scope: str, name: str = "") -> str:
    done = trickscope_cli("token", "create", "--scope", scope, "--name", name, "--db", db_url)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("tsk_") and "\n" not in secret
    return secret


def token_id(db_url: str, name: str) -> str:
    listing = trickscope_cli("token", "list", "--db", db_url)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    return next(row[0] for row in rows if row[-1] == name)


def batch_body(series: str = "loss", steps: int = 5) -> bytes:
    now = time.time()
    column = SeriesColumns(
        series,
        encode_i64(list(range(steps))),
        encode_f64([float(s) for s in range(steps)]),
        encode_f64([now] * steps),
    )
    histogram = HistogramColumns(
        name="grad_hist",
        bins=2,
        steps=encode_i64([0]),
        lo=encode_f64([0.0]),
        hi=encode_f64([1.0]),
        counts=encode_f64([1.0, 2.0]),
        nonfinite=encode_f64([0.0]),
        times=encode_f64([now]),
    )
    return dumps(PointBatch(batch_id=uuid.uuid4().hex, series=[column], histograms=[histogram]))


@dataclass(frozen=True)
class Probe:
    """One request to a route and the status it answers when access is granted."""

    path: str  # {run} is the credential's own run for writes, the seeded run for reads
    ok: int
    body: bytes | None = None


# (method, route path) -> the probe. Writes run in this order, so DELETE comes last.
PROBES: dict[tuple[str, str], Probe] = {
    ("GET", "/openapi.json"): Probe("/openapi.json", 200),
    ("GET", "/api/v1/session"): Probe("/api/v1/session", 200),
    ("POST", "/api/v1/session"): Probe("/api/v1/session", 401, b'{"token": "tsk_not_a_token"}'),
    ("DELETE", "/api/v1/session"): Probe("/api/v1/session", 204),
    ("PUT", "/api/v1/runs/{run_id}"): Probe(
        "/api/v1/runs/{run}", 200, b'{"project": "matrix", "name": "m"}'
    ),
    ("PUT", "/api/v1/runs/{run_id}/layers"): Probe(
        "/api/v1/runs/{run}/layers", 200, b'{"layers": ["fc"]}'
    ),
    ("PUT", "/api/v1/runs/{run_id}/ranks/{rank}"): Probe(
        "/api/v1/runs/{run}/ranks/0", 200, b'{"system": {}}'
    ),
    ("PUT", "/api/v1/runs/{run_id}/setup"): Probe(
        "/api/v1/runs/{run}/setup", 200, b'{"setup": {}}'
    ),
    ("PUT", "/api/v1/runs/{run_id}/findings"): Probe(
        "/api/v1/runs/{run}/findings", 200, b'{"findings": []}'
    ),
    ("POST", "/api/v1/runs/{run_id}/points"): Probe("/api/v1/runs/{run}/points", 200, b"batch"),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"): Probe("/api/v1/runs/{run}/heartbeat", 204, b"{}"),
    ("GET", "/api/v1/runs/{run_id}/followed"): Probe("/api/v1/runs/{run}/followed?wait=0", 200),
    ("POST", "/api/v1/runs/{run_id}/finish"): Probe(
        "/api/v1/runs/{run}/finish", 200, b'{"status": "finished"}'
    ),
    ("DELETE", "/api/v1/runs/{run_id}"): Probe("/api/v1/runs/{run}", 204),
    ("GET", "/api/v1/runs"): Probe("/api/v1/runs", 200),
    ("GET", "/api/v1/runs/{run_id}"): Probe("/api/v1/runs/{run}", 200),
    ("GET", "/api/v1/runs/{run_id}/health"): Probe("/api/v1/runs/{run}/health", 200),
    ("GET", "/api/v1/runs/{run_id}/series"): Probe("/api/v1/runs/{run}/series", 200),
    ("GET", "/api/v1/runs/{run_id}/points"): Probe("/api/v1/runs/{run}/points?name=loss", 200),
    ("GET", "/api/v1/runs/{run_id}/histograms"): Probe(
        "/api/v1/runs/{run}/histograms?name=grad_hist", 200
    ),
    ("GET", "/api/v1/runs/{run_id}/histograms/names"): Probe(
        "/api/v1/runs/{run}/histograms/names", 200
    ),
    ("GET", "/api/v1/compare/series"): Probe("/api/v1/compare/series?runs={run}&name=loss", 200),
    ("GET", "/api/v1/sparklines"): Probe("/api/v1/sparklines?runs={run}&name=loss", 200),
    ("GET", "/api/v1/runs/{run_id}/heatmap"): Probe(
        "/api/v1/runs/{run}/heatmap?stat=grad_norm", 200
    ),
    ("GET", "/api/v1/runs/{run_id}/export.csv"): Probe("/api/v1/runs/{run}/export.csv", 200),
    ("GET", "/api/v1/runs/{run_id}/export.parquet"): Probe(
        "/api/v1/runs/{run}/export.parquet", 200
    ),
    ("GET", "/api/v1/runs/{run_id}/events"): Probe("/api/v1/runs/{run}/events?after=0", 200),
    ("GET", "/"): Probe("/", 200),
    ("GET", "/runs/{run_id}"): Probe("/runs/{run}", 200),
    ("GET", "/compare"): Probe("/compare?runs={run}", 200),
    ("GET", "/login"): Probe("/login", 200),
    ("GET", "/docs"): Probe("/docs", 200),
    ("GET", "/static/vendor/swagger-ui/{name}"): Probe(
        "/static/vendor/swagger-ui/swagger-ui-bundle.js", 200
    ),
    ("GET", "/static/vendor/plotly-cartesian-{version}.min.js"): Probe(PLOTLY_URL, 200),
    ("GET", "/healthz"): Probe("/healthz", 200),
    ("GET", "/static"): Probe("/static/app.css", 200),  # the dashboard's files (a mount)
}
# Reachable without a token: the probe, the login page and route, and code without run data.
OPEN = {
    ("GET", "/healthz"),
    ("GET", "/login"),
    ("GET", "/api/v1/session"),
    ("POST", "/api/v1/session"),
    ("DELETE", "/api/v1/session"),
    ("GET", "/static/vendor/swagger-ui/{name}"),
    ("GET", "/static/vendor/plotly-cartesian-{version}.min.js"),
    ("GET", "/static"),
}


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD aside), mounts as GET."""
    from fastapi.routing import iter_route_contexts

    app = create_app(Settings(database_url="sqlite://"))
    routes: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        methods = route.methods or {"GET"}  # a mount serves GET (static files)
        routes |= {(method, route.path) for method in methods if method != "HEAD"}
    app.state.db.dispose()
    return routes


def test_every_route_has_a_probe() -> None:
    routes = app_routes()
    missing = routes - PROBES.keys()
    assert not missing, f"routes without an auth probe in this matrix: {sorted(missing)}"
    stale = PROBES.keys() - routes
    assert not stale, f"probes for routes the app does not have: {sorted(stale)}"


@dataclass
class AuthServer:
    server: LiveServer
    secrets: dict[str, str | None] = field(default_factory=dict)  # credential kind -> secret

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self, kind: str) -> dict[str, str]:
        secret = self.secrets[kind]
        return {} if secret is None else {"Authorization": f"Bearer {secret}"}


ENV_SECRET = "env-" + "e" * 40


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    """A database holding read, write and revoked tokens made with the real command line, and
    every kind of credential's secret; made once, each test serving its own copy."""
    path = tmp_path_factory.mktemp("credentials") / "trickscope.db"
    db_url = f"sqlite:///{path}"
    secrets: dict[str, str | None] = {
        "none": None,
        "wrong": "tsk_" + "x" * 43,
        "malformed": "",  # another scheme: Authorization: Basic ...
        "read": create_token(db_url, "read", "reader"),
        "write": create_token(db_url, "write", "writer"),
        "revoked": create_token(db_url, "write", "gone"),
        "env": ENV_SECRET,
    }
    revoked = trickscope_cli("token", "revoke", token_id(db_url, "gone"), "--db", db_url)
    assert revoked.returncode == 0, revoked.stderr
    return path, secrets


@pytest.fixture
def auth_server(
    tmp_path: Path, credentials: tuple[Path, dict[str, str | None]]
) -> Iterator[AuthServer]:
    """A server with every kind of credential: env token, DB tokens (read, write, revoked)."""
    template, secrets = credentials
    db_path = tmp_path / "trickscope.db"
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(db_path)) as copy:
        source.backup(copy)
    db_url = f"sqlite:///{db_path}"
    server = start_server(
        db_url,
        tmp_path / "server.log",
        env={"TRICKSCOPE_TOKEN": ENV_SECRET, "TRICKSCOPE_TOKEN_CACHE_SECONDS": "0.5"},
    )
    auth = AuthServer(server, secrets)
    with httpx.Client(base_url=server.url, headers={**JSON, **auth.headers("write")}) as http:
        assert http.put(f"/api/v1/runs/{SEEDED}", content=b'{"project": "p", "name": "s"}')
        assert http.post(f"/api/v1/runs/{SEEDED}/points", content=batch_body()).status_code == 200
    yield auth
    stop_server(server)


def send(http: httpx.Client, method: str, probe: Probe, run: str, headers: dict) -> httpx.Response:
    path = probe.path.replace("{run}", run)
    body = batch_body() if probe.body == b"batch" else probe.body
    request = http.build_request(method, path, content=body, headers={**JSON, **headers})
    if path.startswith("/api/v1/runs/") and "/events" in path:
        response = http.send(request, stream=True)  # a live stream: the status is enough
        if response.status_code != 200:
            response.read()  # a refusal is a short problem document
        response.close()
        return response
    return http.send(request)


def expected(method: str, route: str, probe: Probe, kind: str) -> int | str:
    if (method, route) in OPEN:
        return probe.ok
    if kind in ("wrong", "malformed", "revoked"):
        return 401
    if kind == "none":
        page = method == "GET" and not probe.path.startswith(("/api/", "/openapi.json"))
        return "login" if page else 401
    if kind == "read" and method != "GET":
        return 403
    return probe.ok


KINDS = ["none", "wrong", "malformed", "revoked", "read", "write", "env"]


def test_every_route_answers_each_credential_as_its_scope_allows(auth_server: AuthServer) -> None:
    assert app_routes() == PROBES.keys()  # every route is requested below, in PROBES' order
    failures: list[str] = []
    with httpx.Client(base_url=auth_server.url, follow_redirects=False, timeout=10) as http:
        for kind in KINDS:
            headers = (
                {"Authorization": "Basic dXNlcjpwYXNz"}
                if kind == "malformed"
                else auth_server.headers(kind)
            )
            for (method, route), probe in PROBES.items():
                run = f"w-{kind}" if method != "GET" else SEEDED
                response = send(http, method, probe, run, headers)
                want = expected(method, route, probe, kind)
                if want == "login":
                    location = response.headers.get("location", "")
                    got_login = response.status_code == 303 and location.startswith("/login?next=")
                    if not got_login:
                        failures.append(f"{kind} {method} {route}: {response.status_code}")
                    continue
                if response.status_code != want:
                    failures.append(
                        f"{kind} {method} {route}: {response.status_code} != {want} "
                        f"{response.text[:160]!r}"
                    )
                elif want in (401, 403):
                    problem = response.json()
                    assert response.headers["content-type"] == "application/problem+json"
                    assert problem["status"] == want
    assert not failures, "\n".join(failures)

    # Nothing a refused credential sent was stored; the allowed writers' runs went the whole way.
    with httpx.Client(base_url=auth_server.url, headers=auth_server.headers("write")) as http:
        ids = {run["id"] for run in http.get("/api/v1/runs").json()["runs"]}
    assert ids == {SEEDED}  # every writer deleted its own run last; nobody else created one
    assert "Traceback" not in auth_server.server.log()


def test_a_revoked_token_and_its_dashboard_session_stop_working_within_seconds(
    auth_server: AuthServer,
) -> None:
    db_url = auth_server.server.database_url
    secret = create_token(db_url, "read", "short-lived")
    with httpx.Client(base_url=auth_server.url, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {secret}"}
        # A token created while the server runs is accepted after the cache time (0.5 s here).
        wait_until(
            lambda: http.get("/api/v1/runs", headers=bearer).status_code == 200,
            timeout=5,
            what="the new token to be accepted",
        )
        login = http.post("/api/v1/session", json={"token": secret})
        assert login.status_code == 200 and login.json()["scope"] == "read"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert secret not in cookie  # the session names the token, it does not carry it
        assert http.get("/api/v1/runs").status_code == 200  # the cookie alone

        revoked_at = time.monotonic()
        done = trickscope_cli("token", "revoke", token_id(db_url, "short-lived"), "--db", db_url)
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: http.get("/api/v1/runs", headers=bearer).status_code == 401,
            timeout=5,
            what="the revoked token to be refused",
        )
        assert time.monotonic() - revoked_at < 5
        assert http.get("/api/v1/runs").status_code == 401  # the session died with its token


def test_token_list_shows_use_and_revocation_but_never_a_secret(auth_server: AuthServer) -> None:
    listing = trickscope_cli("token", "list", "--db", auth_server.server.database_url)
    assert listing.returncode == 0
    for kind in ("read", "write", "revoked"):
        assert auth_server.secrets[kind] not in listing.stdout
    rows = {line.split()[-1]: line for line in listing.stdout.splitlines()[1:]}
    assert set(rows) == {"reader", "writer", "gone"}
    assert rows["reader"].split()[1] == "read" and rows["writer"].split()[1] == "write"


def test_a_body_must_be_json_and_nothing_else_is_stored(auth_server: AuthServer) -> None:
    bearer = auth_server.headers("write")
    with httpx.Client(base_url=auth_server.url, headers=bearer, timeout=10) as http:
        http.put("/api/v1/runs/ct", json={"project": "p", "name": "n"}).raise_for_status()
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = http.post("/api/v1/runs/ct/points", content=batch_body(), headers=headers)
            assert response.status_code == 415, (content_type, response.text)
            assert response.json()["type"].endswith("unsupported-media-type")
        assert http.get("/api/v1/runs/ct/series").json()["series"] == []
        charset = {"Content-Type": "application/json; charset=utf-8"}
        response = http.post("/api/v1/runs/ct/points", content=batch_body(), headers=charset)
        assert response.status_code == 200


def test_the_host_header_must_name_this_server(tmp_path: Path) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'trickscope.db'}",
        tmp_path / "server.log",
        env={"TRICKSCOPE_ALLOWED_HOSTS": "dash.example, other.example"},
    )
    port = server.url.rsplit(":", 1)[1]
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", "local"):
                response = http.get("/api/v1/runs", headers={"Host": host})
                assert response.status_code == 421, host
                assert response.json()["type"].endswith("unknown-host")
            accepted = [
                f"127.0.0.1:{port}",
                f"localhost:{port}",
                "LOCALHOST",
                f"[::1]:{port}",
                f"dash.example:{port}",
                "other.example",
                f"10.1.2.3:{port}",  # an address: a rebinding page cannot send one
            ]
            for host in accepted:
                response = http.get("/api/v1/runs", headers={"Host": host})
                assert response.status_code == 200, (host, response.text)
            # The probe answers whatever the name (container health checks use the pod's).
            assert http.get("/healthz", headers={"Host": "anything"}).status_code == 200
            refused = http.put(
                "/api/v1/runs/x", json={"project": "p", "name": "n"}, headers={"Host": "evil"}
            )
            assert refused.status_code == 421
            assert http.get("/api/v1/runs/x").status_code == 404  # nothing stored
    finally:
        stop_server(server)


def test_a_loopback_server_without_tokens_stays_open(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=10) as http:
        assert http.get("/api/v1/session").json() == {
            "auth_required": False,
            "logged_in": False,
            "scope": None,
        }
        put = http.put("/api/v1/runs/open", json={"project": "p", "name": "n"})
        assert put.status_code == 200
        assert http.get("/api/v1/runs").json()["runs"][0]["id"] == "open"
        assert http.get("/").status_code == 200
        login = http.get("/login")
        assert login.status_code == 303 and login.headers["location"] == "/"
        # Still closed to other sites: no CORS, JSON bodies only, and the security headers.
        page = http.get("/")
        assert "access-control-allow-origin" not in page.headers
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        plain = {"Content-Type": "text/plain"}
        assert (
            http.post("/api/v1/runs/open/finish", content=b"{}", headers=plain).status_code == 415
        )


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trickscope_cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TRICKSCOPE_TOKEN": "", **(env or {})},
    )


def test_serve_refuses_a_non_loopback_bind_without_a_token(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'trickscope.db'}"
    process = serve("--host", "0.0.0.0", "--port", str(free_port()), "--db", db_url)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in err
    assert "trickscope token create" in err and "--insecure" in err and "TRICKSCOPE_TOKEN" in err
    assert "dashboard at" not in out  # it never started

    weak = serve(
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--db",
        db_url,
        env={"TRICKSCOPE_TOKEN": "hunter2"},
    )
    _, err = weak.communicate(timeout=60)
    assert weak.returncode == 2 and "fewer than 16" in err


def test_serve_on_all_interfaces_starts_once_a_token_exists(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'trickscope.db'}"
    secret = create_token(db_url, "write", "box")
    port = free_port()
    process = serve("--host", "0.0.0.0", "--port", str(port), "--db", db_url)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: process.poll() is not None or _answers(f"{url}/healthz"),
            timeout=30,
            what="the server",
        )
        assert process.poll() is None, process.communicate()[1]
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/api/v1/runs").status_code == 401
            bearer = {"Authorization": f"Bearer {secret}"}
            assert http.get("/api/v1/runs", headers=bearer).status_code == 200
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert "authentication on" in out


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def compose_server_env() -> dict[str, str]:
    """The server's environment in docker-compose.yml, as written (before substitution)."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    env: dict[str, str] = compose["services"]["server"]["environment"]
    return env


def test_compose_takes_a_required_token_from_the_env_file_that_the_example_documents() -> None:
    env = compose_server_env()
    assert env["TRICKSCOPE_HOST"] == "0.0.0.0"
    assert env["TRICKSCOPE_TOKEN"].startswith("${TRICKSCOPE_TOKEN:?")  # compose stops without it
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assert "TRICKSCOPE_TOKEN=\n" in example and "openssl rand -hex 32" in example
    assert ".env" in (Path(__file__).resolve().parents[2] / ".gitignore").read_text().split()


def test_the_compose_environment_refuses_an_empty_token_and_serves_with_one(
    tmp_path: Path,
) -> None:
    port = str(free_port())
    env = {"TRICKSCOPE_HOST": "0.0.0.0", "TRICKSCOPE_PORT": port, "TRICKSCOPE_TOKEN": ""}
    env |= {"TRICKSCOPE_ALLOWED_HOSTS": "", "TRICKSCOPE_SESSION_SECRET": ""}  # compose's blanks
    env["TRICKSCOPE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'trickscope.db'}"
    refused = serve(env=env)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "without authentication" in err

    token = "c" * 64
    started = serve(env={**env, "TRICKSCOPE_TOKEN": token})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: started.poll() is not None or _answers(f"{url}/healthz"),
            timeout=30,
            what="the server",
        )
        assert started.poll() is None
        assert httpx.get(f"{url}/api/v1/runs", timeout=10).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/v1/runs", headers=bearer, timeout=10).status_code == 200
    finally:
        started.terminate()
        started.communicate(timeout=10)


def test_report_reads_a_secured_server_with_the_token_from_the_environment(
    auth_server: AuthServer, tmp_path: Path
) -> None:
    out = tmp_path / "run.html"
    args = ("report", SEEDED, "-o", str(out), "--url", auth_server.url)
    refused = trickscope_cli(*args, env={"TRICKSCOPE_TOKEN": ""})
    assert refused.returncode == 2 and "answered 401" in refused.stderr
    assert not out.exists()
    read = auth_server.secrets["read"]
    assert read is not None
    done = trickscope_cli(*args, env={"TRICKSCOPE_TOKEN": read})
    assert done.returncode == 0, done.stderr
    assert "loss" in out.read_text()
