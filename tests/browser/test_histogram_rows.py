"""The histogram-over-time view draws every histogram with its own bins and edges: a layer binned
64 ways at some steps and 32 at others, or over ranges that change between steps."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.test_run_page import steps, wait_chart, wait_loaded

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

# The drawn heatmap per step: the grid's cell centres, and each column's counts.
COLUMNS = """div => {
    const trace = div.data[0];
    const columns = trace.x.map((_, j) => trace.customdata.map((row) => row[j]));
    return {x: trace.x, y: trace.y, columns};
}"""


def drawn(dashboard) -> dict:
    return dashboard.page.eval_on_selector("#chart-hist", COLUMNS)


def show(dashboard, client, run_id: str, layer: str, n: int) -> dict:
    client.post_points(run_id, {f"grad_norm/{layer}": (steps(n), [1.0] * n)})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-hist", n)
    return drawn(dashboard)


def test_rows_of_64_and_32_bins_are_each_drawn_over_their_own_bins(dashboard, client):
    run_id = client.create_run(project="vision", name="bins")
    client.declare_layers(run_id, ["fc.weight"])
    # Every histogram holds 64 values in [0.5, 1) of the range [-1, 1): the top quarter of its
    # bins. Even steps have 64 bins, odd steps 32 (sent apart: one batch has one bin count).
    wide = [0.0] * 48 + [4.0] * 16
    narrow = [0.0] * 24 + [8.0] * 8
    for start, counts in ((0, wide), (1, narrow)):
        at = list(range(start, 10, 2))
        client.post_histograms(
            run_id, "grad_hist/fc.weight", at, [-1.0] * 5, [1.0] * 5, [counts] * 5
        )
    url = f"{client.base_url}/api/v1/runs/{run_id}/histograms?name=grad_hist/fc.weight"
    with urllib.request.urlopen(url, timeout=10) as response:
        served = json.loads(response.read())
    # The server pads the 32-bin rows to 64 with zeros, and says how many bins each row has.
    assert served["bins"] == 64 and served["row_bins"] == [64, 32] * 5
    assert served["counts"][1] == narrow + [0.0] * 32

    got = show(dashboard, client, run_id, "fc.weight", 10)
    assert got["x"] == list(range(10))
    for step, column in enumerate(got["columns"]):
        assert sum(column) == pytest.approx(64.0), step
        mean = sum(y * c for y, c in zip(got["y"], column, strict=True)) / sum(column)
        assert mean == pytest.approx(0.75), f"step {step} drawn around {mean}, not 0.75"
        drawn_at = [y for y, c in zip(got["y"], column, strict=True) if c > 0]
        assert min(drawn_at) > 0.5 and max(drawn_at) < 1.0, step
    dashboard.assert_clean()


def test_bins_wider_than_the_common_grid_are_spread_over_it_not_striped(dashboard, client):
    run_id = client.create_run(project="vision", name="edges")
    client.declare_layers(run_id, ["fc.weight"])
    # Step 0: 4 bins over [-8, 8], 16 values each: uniform. Step 1: 64 bins over [-1, 1], one
    # value each. The common grid is 64 cells over [-8, 8]: a cell is 1/16 of a step-0 bin.
    client.post_histograms(
        run_id, "grad_hist/fc.weight", [0], [-8.0], [8.0], [[16.0, 16.0, 16.0, 16.0]]
    )
    client.post_histograms(run_id, "grad_hist/fc.weight", [1], [-1.0], [1.0], [[1.0] * 64])
    got = show(dashboard, client, run_id, "fc.weight", 2)
    uniform, narrow = got["columns"]
    assert len(uniform) == 64
    # Spread evenly, mass kept: 1 per cell (drawn by bin centre, 4 cells of 16 and 60 empty).
    assert uniform == pytest.approx([1.0] * 64)
    # [-1, 1] is the grid's 8 middle cells of 0.25, each holding 8 of the 64 narrow bins.
    assert narrow == pytest.approx([0.0] * 28 + [8.0] * 8 + [0.0] * 28)
    dashboard.assert_clean()
