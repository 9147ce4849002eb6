"""The runs table filters and sorts by a per-layer statistic sent in blocks (as ``watch`` sends
it), which runs do not show among their latest values: the server's answer stands, and the sort
column shows the values the listing carries."""

from __future__ import annotations

import urllib.parse

import pytest

from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    PointBatch,
    StatBlock,
    dumps,
    encode_f64,
    encode_i64,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

LAYERS = ["fc1.weight", "fc2.weight"]
STAT = "grad_norm/fc1.weight"


def post_block(client, run_id: str, values: list[float]) -> None:
    steps = list(range(len(values)))
    block = StatBlock(
        family="grad_norm",
        layers=LAYERS,
        steps=encode_i64(steps),
        times=encode_f64([1e9] * len(steps)),
        values=[encode_f64(values), encode_f64([1.0] * len(steps))],
    )
    batch = PointBatch(
        batch_id=f"{run_id}-b", series=[], blocks=[block], wire_version=BLOCKS_WIRE_VERSION
    )
    client._send("POST", f"/runs/{run_id}/points", dumps(batch))


def shown_names(dashboard, count: int) -> list[str]:
    dashboard.page.wait_for_function(
        "n => document.body.dataset.loaded === 'true'"
        " && document.querySelectorAll('#runs-body tr').length === n",
        arg=count,
    )
    return dashboard.page.eval_on_selector_all(
        "#runs-body tr", "trs => trs.map(tr => tr.querySelector('td[data-col=name] a').textContent)"
    )


def test_runs_table_filters_and_sorts_by_a_per_layer_statistic_in_blocks(dashboard, client):
    for name, last in (("low", 0.5), ("mid", 2.0), ("high", 7.0), ("inf", float("inf"))):
        run_id = client.create_run(project="blocks", name=name)
        client.declare_layers(run_id, LAYERS)
        post_block(client, run_id, [3.0, last])
        client.post_points(run_id, {"loss": ([0], [1.0])})
    client.create_run(project="blocks", name="without")

    query = urllib.parse.urlencode({"metric": f"{STAT}>1", "sort": f"-metric:{STAT}"})
    dashboard.goto(f"/?{query}")
    assert shown_names(dashboard, 3) == ["inf", "high", "mid"]
    dashboard.page.fill("#filter-metric", f"{STAT}<1")
    assert shown_names(dashboard, 1) == ["low"]
    dashboard.page.fill("#filter-metric", "")
    # Sorted by the statistic alone: every run listed, the one without it last.
    assert shown_names(dashboard, 5) == ["inf", "high", "mid", "low", "without"]
    dashboard.assert_clean()


def sort_column(dashboard, count: int) -> list[tuple[str, str]]:
    """(name, sort-column text) of each row, once ``count`` rows show a value there."""
    dashboard.page.wait_for_function(
        "n => document.body.dataset.loaded === 'true'"
        " && document.querySelectorAll('#runs-body td[data-col=sort-col]').length === n",
        arg=count,
    )
    rows = dashboard.page.eval_on_selector_all(
        "#runs-body tr",
        "trs => trs.map(tr => [tr.querySelector('td[data-col=name] a').textContent,"
        " tr.querySelector('td[data-col=sort-col]').textContent])",
    )
    return [(name, text) for name, text in rows]


def test_runs_table_sorted_by_a_per_layer_statistic_shows_its_values(dashboard, client):
    lasts = {"low": 0.5, "mid": 2.0, "inf": float("inf"), "ninf": float("-inf")}
    lasts["nan"] = float("nan")
    for name, last in lasts.items():
        run_id = client.create_run(project="shown", name=name)
        client.declare_layers(run_id, LAYERS)
        post_block(client, run_id, [3.0, last])
        client.post_points(run_id, {"loss": ([0], [1.0])})
    # The statistic sent as a series of its own (older agents): shown the same way.
    run_id = client.create_run(project="shown", name="row")
    client.declare_layers(run_id, LAYERS)
    client.post_points(run_id, {STAT: ([0, 1], [9.0, 1.25])})
    client.create_run(project="shown", name="without")

    dashboard.goto(f"/?{urllib.parse.urlencode({'sort': f'-metric:{STAT}'})}")
    assert dashboard.page.text_content("#sort-col") == STAT
    descending = [
        ("inf", "+Inf"),
        ("mid", "2"),
        ("row", "1.25"),
        ("low", "0.5"),
        ("ninf", "\u2212Inf"),
    ]
    shown = sort_column(dashboard, 7)
    assert shown[:5] == descending
    # NaN sorts as missing yet shows as NaN; a run without the statistic shows a dash.
    assert sorted(shown[5:]) == [("nan", "NaN"), ("without", "\u2014")]

    dashboard.page.click(f"#sort-col button[data-sort='metric:{STAT}']")  # ascending now
    dashboard.page.wait_for_function(
        "() => document.querySelector('#runs-body tr td[data-col=name] a').textContent === 'ninf'"
    )
    shown = sort_column(dashboard, 7)
    assert shown[:5] == descending[::-1]
    assert sorted(shown[5:]) == [("nan", "NaN"), ("without", "\u2014")]
    dashboard.assert_clean()
