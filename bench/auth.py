"""What authentication costs a request: the security middleware alone (in process) and whole
requests over loopback HTTP (a real server), open versus with a token.

    python bench/auth.py [--requests 20000] [--http-requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from trickscope_server.config import Settings
from trickscope_server.security import Authenticator, HostPolicy, SecurityGuard, TokenRegistry
from trickscope_server.security.sessions import COOKIE_NAME, new_session_key
from trickscope_server.services import tokens
from trickscope_server.storage import Database
from trickscope_wire import PointBatch, RunCreate, SeriesColumns, dumps, encode_f64, encode_i64

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers import free_port, wait_until  # noqa: E402


async def _ok(scope: dict, receive: object, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/runs/r/points",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
            *headers,
        ],
    }


def middleware_cost(requests: int) -> dict[str, float]:
    """Microseconds per request added by the guard, per way of presenting a credential."""
    folder = Path(tempfile.mkdtemp())
    db = Database(f"sqlite:///{folder / 'auth.db'}")
    db.upgrade()

    def guard(with_token: bool) -> tuple[SecurityGuard, str]:
        secret = tokens.create_token(db, scope="write")[1] if with_token else ""
        registry = TokenRegistry(db, env_token=None, ttl_seconds=2.0)
        registry.load()
        auth = Authenticator(registry, session_key=new_session_key(), session_seconds=3600)
        hosts = HostPolicy(allowed_hosts=[], bind_host="127.0.0.1")
        return SecurityGuard(_ok, auth=auth, hosts=hosts), secret

    async def sink(message: dict) -> None:
        pass

    async def time_it(app, headers) -> float:  # type: ignore[no-untyped-def]
        scope = _scope(headers)
        for _ in range(1000):
            await app(dict(scope), None, sink)
        start = time.perf_counter()
        for _ in range(requests):
            await app(dict(scope), None, sink)
        return (time.perf_counter() - start) / requests * 1e6

    open_guard, _ = guard(False)
    results = {"no middleware": asyncio.run(time_it(_ok, []))}
    results["open (no token exists)"] = asyncio.run(time_it(open_guard, []))
    token_guard, secret = guard(True)
    bearer = [(b"authorization", f"Bearer {secret}".encode())]
    results["bearer token"] = asyncio.run(time_it(token_guard, bearer))
    grant = token_guard.auth.bearer(f"Bearer {secret}")
    assert grant is not None
    cookie = f"{COOKIE_NAME}={token_guard.auth.new_session(grant)}"
    results["session cookie"] = asyncio.run(time_it(token_guard, [(b"cookie", cookie.encode())]))
    db.dispose()
    return results


def _points_latency(secret: str | None, requests: int) -> float:
    """Median seconds of a one-point POST to a fresh server (token ``secret``, or open)."""
    folder = Path(tempfile.mkdtemp())
    port = free_port()
    env = {**os.environ, "TRICKSCOPE_TOKEN": secret or ""}
    command = [sys.executable, "-m", "trickscope_cli", "serve", "--port", str(port)]
    command += ["--db", f"sqlite:///{folder / 'http.db'}"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(method: str, path: str, body: bytes) -> int:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    def up() -> bool:
        try:
            return call("GET", "/healthz", b"") == 200
        except OSError:
            conn.close()
            return False

    try:
        wait_until(up, timeout=30, what="server")
        run = uuid.uuid4().hex
        assert call("PUT", f"/api/v1/runs/{run}", dumps(RunCreate("bench", "auth"))) == 200
        times = []
        for step in range(requests):
            column = SeriesColumns("loss", encode_i64([step]), encode_f64([1.0]), encode_f64([1.0]))
            body = dumps(PointBatch(batch_id=uuid.uuid4().hex, series=[column]))
            start = time.perf_counter()
            assert call("POST", f"/api/v1/runs/{run}/points", body) == 200
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        conn.close()
        server.terminate()
        server.wait(timeout=10)


def http_cost(requests: int) -> dict[str, float]:
    """Median microseconds of a small points POST over keep-alive HTTP, open and with a token."""
    return {
        "open": _points_latency(None, requests) * 1e6,
        "bearer token": _points_latency("b" * 64, requests) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--http-requests", type=int, default=3_000)
    args = parser.parse_args()
    print(f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    Settings()  # fail early on a broken environment
    for label, micros in middleware_cost(args.requests).items():
        print(f"middleware, {label}: {micros:.1f} µs/request")
    for label, micros in http_cost(args.http_requests).items():
        print(f"HTTP points POST (1 point), {label}: median {micros:.0f} µs")


if __name__ == "__main__":
    main()
