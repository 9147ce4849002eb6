"""``trickscope report`` carries the run's health findings and checks into the HTML."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.unit.server.conftest import JSON, point_batch
from tests.unit.server.test_server_sse import base_url  # noqa: F401 - the live server fixture
from trickscope_cli.report_cmd import collect, render
from trickscope_wire import dumps

pytestmark = pytest.mark.timeout(60)


def test_the_report_holds_the_findings_and_the_checks(base_url: str) -> None:  # noqa: F811
    with httpx.Client(base_url=base_url, timeout=10.0, headers=JSON) as api:
        assert api.put("/api/v1/runs/r1", json={"project": "p", "name": "n"}).status_code == 200
        steps = list(range(10))
        batch = point_batch("b1", {"loss/train": (steps, [1.0] * 4 + [float("inf")] * 6)})
        assert api.post("/api/v1/runs/r1/points", content=dumps(batch)).status_code == 200
    data = collect(base_url, "r1", points=100)
    (finding,) = data["health"]["findings"]
    assert (finding["check"], finding["step"]) == ("nonfinite-loss", 4)
    assert {c["id"] for c in data["health"]["checks"]} >= {"warmup", "ema", "loss"}
    html = render(data)
    # The run page's Health panel draws them from the inline report.
    assert 'id="health-list"' in html and 'id="health-checks"' in html
    embedded = re.search(r'id="trickscope-data">(.*?)</script>', html, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1))["health"]["findings"][0]["check"] == "nonfinite-loss"
