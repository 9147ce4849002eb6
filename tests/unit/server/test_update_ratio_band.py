"""One update-ratio band: the rule judges by it and /health sends it for the chart to shade."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.server.conftest import point_batch
from tests.unit.server.health_view import Run, check
from trickscope_server.services.health.updates import UPDATE_RATIO_BAND, update_ratio_band
from trickscope_wire import LayersDeclare, dumps

LOW, HIGH = UPDATE_RATIO_BAND


def test_the_band_is_the_one_the_documents_justify() -> None:
    # TRICKS.md and docs/diagnosis.md: persistently outside ~1e-5 … 1e-1, around ~1e-3.
    assert update_ratio_band() == {"low": 1e-5, "high": 1e-1, "typical": 1e-3}


@pytest.mark.parametrize(
    ("median", "expected"),
    [
        (HIGH * 1.5, "update-ratio-high"),
        (HIGH * 0.9, None),
        (LOW * 1.1, None),
        (LOW * 0.5, "update-ratio-low"),
    ],
)
def test_the_rule_fires_exactly_outside_the_band(median: float, expected: str | None) -> None:
    run = Run(layers=["fc.weight"]).add("update_ratio/fc.weight", [median] * 20)
    found = check(run, "update-ratio")
    assert [f.check for f in found] == ([expected] if expected else [])
    for item in found:
        assert item.evidence["band"] == [LOW, HIGH]


def test_health_sends_the_band_the_rule_uses(client: Any, make_run: Any) -> None:
    make_run("r1")
    response = client.put(
        "/api/v1/runs/r1/layers", content=dumps(LayersDeclare(layers=["fc.weight"]))
    )
    assert response.status_code == 200, response.text
    batch = point_batch("b1", {"update_ratio/fc.weight": (list(range(20)), [HIGH * 2] * 20)})
    assert client.post("/api/v1/runs/r1/points", content=dumps(batch)).status_code == 200
    body = client.get("/api/v1/runs/r1/health").json()
    assert body["bands"]["update_ratio"] == {"low": LOW, "high": HIGH, "typical": 1e-3}
    (high,) = [f for f in body["findings"] if f["check"] == "update-ratio-high"]
    band = body["bands"]["update_ratio"]
    assert high["evidence"]["band"] == [band["low"], band["high"]]
