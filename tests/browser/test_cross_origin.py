"""Real Chromium against a real server: the login and log-out flow, the API page under its CSP,
and a page on another origin that tries to write to and read from a local server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import Client
from tests.helpers import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

TOKEN = "browser-" + "t" * 40


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A loopback server with authentication on (TRICKSCOPE_TOKEN)."""
    server = start_server(
        f"sqlite:///{tmp_path / 'trickscope.db'}",
        tmp_path / "server.log",
        env={"TRICKSCOPE_TOKEN": TOKEN},
    )
    yield server
    stop_server(server)


class Console:
    """A browser context's page, with what its console reported."""

    def __init__(self, browser: object) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on(
            "console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None
        )
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))


@pytest.fixture
def console(browser) -> Iterator[Console]:
    tab = Console(browser)
    yield tab
    tab.context.close()


def test_the_dashboard_asks_for_a_token_once_and_logs_out(token_server, console) -> None:
    client = Client(token_server.url, token=TOKEN)
    run_id = client.create_run(project="vision", name="secured")
    client.post_points(run_id, {"loss": (list(range(10)), [1.0 / (s + 1) for s in range(10)])})
    page = console.page

    page.goto(f"{token_server.url}/runs/{run_id}")
    page.wait_for_url(f"**/login?next=%2Fruns%2F{run_id}")
    page.fill("#token", "not-the-token")
    page.click("#login-button")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "unknown or revoked" in page.inner_text("#login-error")
    assert page.url.startswith(f"{token_server.url}/login")

    page.fill("#token", TOKEN)
    page.click("#login-button")
    page.wait_for_url(f"{token_server.url}/runs/{run_id}")
    page.wait_for_function("() => document.body.dataset.loaded === 'true'")
    page.wait_for_function("() => document.getElementById('chart-loss')?.dataset.points === '10'")
    # The live stream is authenticated by the same cookie.
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'live'")
    cookies = {c["name"]: c for c in console.context.cookies()}
    session = cookies["trickscope_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/"
    assert TOKEN not in session["value"]
    assert page.evaluate("() => document.cookie") == ""  # no script can read the session

    page.goto(f"{token_server.url}/")  # other pages need no new login
    page.wait_for_selector(f"#runs-body tr[data-run-id='{run_id}']")
    page.click("#logout")
    page.wait_for_url(f"{token_server.url}/login")
    assert "trickscope_session" not in {c["name"] for c in console.context.cookies()}
    page.goto(f"{token_server.url}/")
    page.wait_for_url("**/login?next=%2F")
    # The one expected console error: the refused login (401) of the wrong token.
    assert [e for e in console.errors if "401" not in e] == [], console.errors
    assert len(console.errors) == 1


def test_a_revoked_session_sends_the_open_page_back_to_the_login(token_server, console) -> None:
    page = console.page
    page.goto(f"{token_server.url}/login")
    page.fill("#token", TOKEN)
    page.click("#login-button")
    page.wait_for_url(f"{token_server.url}/")
    console.context.clear_cookies()  # as when the session ends while the page is open
    page.wait_for_url("**/login?next=%2F", timeout=20_000)  # the runs page refreshes itself


def test_the_api_page_renders_swagger_ui_under_the_csp(live_server, console) -> None:
    page = console.page
    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector("[data-path='/api/v1/runs/{run_id}/points']")
    assert (
        "default-src 'self'"
        in httpx.get(f"{live_server.url}/docs").headers["content-security-policy"]
    )
    assert console.errors == []  # nothing blocked by the CSP, nothing fetched elsewhere


ATTACK_PAGE = """<!doctype html><title>elsewhere</title>
<iframe name="sink"></iframe>
<form id="plain" method="POST" enctype="text/plain" target="sink"
 action="{target}/api/v1/runs/{run}/points">
<input name='{{"batch_id":"evil","series":[],"x":"' value='"}}'></form>
<form id="urlenc" method="POST" target="sink" action="{target}/api/v1/runs/{run}/finish">
<input name="status" value="failed"></form>
<script>
const target = "{target}";
const results = {{}};
async function attempt(name, run) {{
  try {{ const r = await run(); results[name] = "answered " + r.type + " " + r.status;
         if (r.type === "basic" || r.type === "cors") results[name] += " " + (await r.text()); }}
  catch (e) {{ results[name] = "blocked: " + e.name; }}
}}
(async () => {{
  await attempt("read", () => fetch(`${{target}}/api/v1/runs`, {{credentials: "include"}}));
  await attempt("read-run", () => fetch(`${{target}}/api/v1/runs/{run}`, {{
    credentials: "include"}}));
  await attempt("write-plain", () => fetch(`${{target}}/api/v1/runs/{run}/points`, {{
    method: "POST", mode: "no-cors", credentials: "include",
    headers: {{"Content-Type": "text/plain"}}, body: {batch}}}));
  await attempt("write-json", () => fetch(`${{target}}/api/v1/runs/{run}/points`, {{
    method: "POST", credentials: "include",
    headers: {{"Content-Type": "application/json"}}, body: {batch}}}));
  await attempt("delete", () => fetch(`${{target}}/api/v1/runs/{run}`, {{
    method: "DELETE", credentials: "include"}}));
  const sunk = () => new Promise(done => {{
    const frame = document.querySelector("iframe"); frame.onload = done; setTimeout(done, 3000);
  }});
  let landed = sunk(); document.getElementById("plain").submit(); await landed;
  landed = sunk(); document.getElementById("urlenc").submit(); await landed;
  window.results = results;
}})();
</script>"""


@pytest.fixture
def elsewhere() -> Iterator[dict[str, object]]:
    """A second origin: a tiny HTTP server on another port, addressed as ``localhost``."""
    pages: dict[str, object] = {"html": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = str(pages["html"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pages["url"] = f"http://localhost:{server.server_address[1]}/"
    yield pages
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run_attack(console: Console, elsewhere: dict[str, object], target: str, run: str) -> dict:
    batch = Client(target)  # for the batch encoding only
    body = batch_json(batch, run)
    elsewhere["html"] = ATTACK_PAGE.format(target=target, run=run, batch=repr(body))
    console.page.goto(str(elsewhere["url"]))
    console.page.wait_for_function("() => window.results !== undefined", timeout=30_000)
    results: dict = console.page.evaluate("() => window.results")
    return results


def batch_json(client: Client, run: str) -> str:
    from trickscope_wire import PointBatch, SeriesColumns, dumps, encode_f64, encode_i64

    column = SeriesColumns("injected", encode_i64([1]), encode_f64([666.0]), encode_f64([1.0]))
    return dumps(PointBatch(batch_id=f"attack-{run}", series=[column])).decode()


def assert_untouched(api: Client, run: str) -> None:
    stored = api._send("GET", f"/runs/{run}")
    assert stored["status"] == "running"  # not finished as "failed", not deleted
    assert api._send("GET", f"/runs/{run}/series")["series"] == []  # nothing injected


def assert_nothing_crossed(results: dict) -> None:
    for name in ("read", "read-run", "write-json"):
        assert results[name].startswith("blocked"), (name, results[name])  # no CORS for them
    # A no-cors request may leave the browser, but its answer stays opaque to the page.
    assert results["write-plain"] == "answered opaque 0", results["write-plain"]
    assert results["delete"].startswith("blocked"), results["delete"]


def test_another_origin_can_neither_write_nor_read_an_open_local_server(
    live_server, console, elsewhere
) -> None:
    api = Client(live_server.url)
    run = api.create_run(project="victim", name="local")
    results = run_attack(console, elsewhere, live_server.url, run)
    assert_nothing_crossed(results)
    assert_untouched(api, run)
    assert "attack" not in live_server.log()


def test_another_origin_cannot_ride_a_logged_in_dashboard_session(
    token_server, console, elsewhere
) -> None:
    api = Client(token_server.url, token=TOKEN)
    run = api.create_run(project="victim", name="secured")
    # The victim is logged in to the dashboard in this same browser.
    console.page.goto(f"{token_server.url}/login")
    console.page.fill("#token", TOKEN)
    console.page.click("#login-button")
    console.page.wait_for_url(f"{token_server.url}/")
    results = run_attack(console, elsewhere, token_server.url, run)
    assert_nothing_crossed(results)
    assert_untouched(api, run)
