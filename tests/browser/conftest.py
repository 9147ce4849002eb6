"""Headless Debian Chromium driven by Playwright; console errors fail the test, failures leave a
screenshot in ``test-artifacts/``."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import pytest

from trickscope_wire import (
    AgentFinding,
    FindingsDeclare,
    HistogramColumns,
    LayersDeclare,
    PointBatch,
    RankDeclare,
    RunCreate,
    RunFinish,
    SeriesColumns,
    SetupDeclare,
    dumps,
    encode_f64,
    encode_i64,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install Debian's chromium package"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@dataclass
class Dashboard:
    """A page plus what it reported: console errors, uncaught errors and dialogs."""

    page: object
    base_url: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.base_url}{path}")

    def assert_clean(self) -> None:
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"
        assert not self.errors, f"console or page errors: {self.errors}"


@pytest.fixture
def dashboard(browser, live_server, request: pytest.FixtureRequest) -> Iterator[Dashboard]:
    """A fresh page on the live server (depends on it, so it closes before the server stops)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    board = Dashboard(page=page, base_url=live_server.url)
    page.on(
        "console",
        lambda msg: (
            board.errors.append(f"console.{msg.type}: {msg.text} @ {msg.location}")
            if msg.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda exc: board.errors.append(f"pageerror: {exc}"))

    def on_dialog(dialog) -> None:
        board.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield board
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        artifacts = Path(request.config.rootpath) / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
        except Exception as exc:  # a screenshot must never hide the real failure
            print(f"screenshot failed: {exc}")  # noqa: T201
    context.close()


class Client:
    """Writes runs and points over real HTTP with the wire package, as the agent does."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:  # a server with authentication on
            self.headers["Authorization"] = f"Bearer {token}"

    def _send(self, method: str, path: str, body: bytes | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.base_url}/api/v1{path}", data=body, method=method, headers=self.headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def create_run(self, project: str = "proj", name: str = "run", **fields: object) -> str:

        run_id = uuid4().hex
        self._send("PUT", f"/runs/{run_id}", dumps(RunCreate(project=project, name=name, **fields)))
        return run_id

    def post_points(self, run_id: str, series: dict[str, tuple[list[int], list[float]]]) -> dict:

        now = time.time()
        columns = [
            SeriesColumns(
                name, encode_i64(steps), encode_f64(values), encode_f64([now] * len(steps))
            )
            for name, (steps, values) in series.items()
        ]
        batch = PointBatch(batch_id=uuid4().hex, series=columns)
        return self._send("POST", f"/runs/{run_id}/points", dumps(batch))

    def post_histograms(
        self,
        run_id: str,
        name: str,
        steps: list[int],
        lo: list[float],
        hi: list[float],
        counts: list[list[float]],
        nonfinite: list[float] | None = None,
    ) -> dict:
        bins = len(counts[0])
        column = HistogramColumns(
            name=name,
            bins=bins,
            steps=encode_i64(steps),
            lo=encode_f64(lo),
            hi=encode_f64(hi),
            counts=encode_f64([c for row in counts for c in row]),
            nonfinite=encode_f64(nonfinite or [0.0] * len(steps)),
            times=encode_f64([time.time()] * len(steps)),
        )
        batch = PointBatch(batch_id=uuid4().hex, series=[], histograms=[column])
        return self._send("POST", f"/runs/{run_id}/points", dumps(batch))

    def declare_layers(self, run_id: str, layers: list[str]) -> dict:
        return self._send("PUT", f"/runs/{run_id}/layers", dumps(LayersDeclare(layers=layers)))

    def declare_rank(self, run_id: str, rank: int, system: dict) -> dict:
        return self._send("PUT", f"/runs/{run_id}/ranks/{rank}", dumps(RankDeclare(system=system)))

    def declare_setup(self, run_id: str, setup: dict) -> dict:
        return self._send("PUT", f"/runs/{run_id}/setup", dumps(SetupDeclare(setup=setup)))

    def declare_findings(self, run_id: str, findings: list[AgentFinding]) -> dict:
        body = dumps(FindingsDeclare(findings=findings))
        return self._send("PUT", f"/runs/{run_id}/findings", body)

    def finish(self, run_id: str, status: str = "finished") -> dict:
        return self._send("POST", f"/runs/{run_id}/finish", dumps(RunFinish(status=status)))


@pytest.fixture
def client(live_server) -> Client:
    return Client(live_server.url)
