"""The run page's diagnosis: the Setup card (what trickscope saw), the Health panel's checks,
each finding's why / remedy / evidence, findings marked on the charts at their step, the
gradient norm before and after clipping, the stream's `health` event, and the layout at
1440x900 (Health and the charts above the fold).

Most tests answer GET /runs/{id} and /health in the contract's shape (docs/diagnosis.md §1, §4)
over the real server's answer, so the page's rendering is checked on its own; the last two seed
the real server (PUT /setup, PUT /findings, NaN points) and read its /health and stream."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from tests.browser.test_health import rows, wait_health
from tests.browser.test_run_page import steps, trace_names, wait_chart, wait_loaded
from trickscope_wire import AgentFinding

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

HOSTILE = "<img src=x onerror=alert(1)>"

SETUP = {
    "version": 1,
    "optimizer": {
        "class": "AdamW",
        "module": "torch.optim.adamw",
        "family": "adam",
        "groups": [
            {
                "index": 0,
                "lr": 0.001,
                "initial_lr": 0.001,
                "betas": [0.9, 0.999],
                "eps": 1e-08,
                "weight_decay": 0.05,
                "decoupled": True,
                "momentum": None,
                "nesterov": None,
                "dampening": None,
                "amsgrad": False,
                "params": [
                    "pos_embed",
                    "blocks.0.norm1.weight",
                    "blocks.0.attn.qkv.weight",
                    "blocks.0.attn.qkv.bias",
                    HOSTILE,
                ],
            },
            {
                "index": 1,
                "lr": 0.001,
                "initial_lr": 0.001,
                "betas": [0.9, 0.999],
                "eps": 1e-08,
                "weight_decay": 0.0,
                "decoupled": True,
                "momentum": None,
                "nesterov": None,
                "dampening": None,
                "amsgrad": False,
                "params": ["head.bias"],
            },
        ],
    },
    "params": [
        {
            "name": "pos_embed",
            "shape": [1, 65, 192],
            "module": "VisionTransformer",
            "kind": "embedding",
            "group": 0,
            "requires_grad": True,
        },
        {
            "name": "blocks.0.norm1.weight",
            "shape": [192],
            "module": "LayerNorm",
            "kind": "norm",
            "group": 0,
            "requires_grad": True,
        },
        {
            "name": "blocks.0.attn.qkv.weight",
            "shape": [576, 192],
            "module": "Linear",
            "kind": "weight",
            "group": 0,
            "requires_grad": True,
        },
        {
            "name": "blocks.0.attn.qkv.bias",
            "shape": [576],
            "module": "Linear",
            "kind": "bias",
            "group": 0,
            "requires_grad": True,
        },
        {
            "name": HOSTILE,
            "shape": [3, 3],
            "module": HOSTILE,
            "kind": "weight",
            "group": 0,
            "requires_grad": True,
        },
        {
            "name": "head.bias",
            "shape": [10],
            "module": "Linear",
            "kind": "bias",
            "group": 1,
            "requires_grad": True,
        },
    ],
    "drop_path": [
        {"module": "blocks.0.drop_path", "class": "DropPath", "rate": 0.0, "parent": "blocks.0"},
        {"module": "blocks.1.drop_path", "class": "DropPath", "rate": 0.1, "parent": "blocks.1"},
    ],
    "scaler": {"class": "GradScaler", "enabled": True},
    "scheduler": {
        "class": "OneCycleLR",
        "module": "torch.optim.lr_scheduler",
        "planned_steps": 1000,
        "warmup_steps": 300,
    },
    "ema": {"class": "AveragedModel", "decay": 0.999, "decay_source": "closure"},
    "planned_steps": 1000,
    "planned_steps_source": "scheduler",
    "every": 10,
    "hist_every": 100,
}

LAYERS = ["blocks.0.attn.qkv.weight", "head.weight"]

FINDINGS = [
    {
        "check": "nonfinite-gradient",
        "severity": "error",
        "title": "NaN gradient in blocks.0.attn.qkv.weight at step 12",
        "detail": "why. remedy.",
        "why": "A NaN gradient poisons every weight at the next step.",
        "remedy": "Lower the LR or clip the gradients.",
        "step": 12,
        "layer": "blocks.0.attn.qkv.weight",
        "evidence": {"value": "NaN", "first_step": 12},
        "source": "agent",
    },
    {
        "check": "no-warmup",
        "severity": "warning",
        "title": "Adam without warmup",
        "detail": "why. remedy.",
        "why": "Adam's second moment is a poor estimate over its first steps.",
        "remedy": "Warm the LR up over about 2/(1-beta2) steps.",
        "step": 0,
        "layer": None,
        "evidence": {"beta2": 0.999, "peak_lr": 0.01, "warmup_steps": 0},
        "source": "server",
    },
    {
        "check": "decay-on-norm-bias",
        "severity": "info",
        "title": f"Weight decay on norm weights: {HOSTILE}",
        "detail": "why. remedy.",
        "why": "Decaying a norm's scale shrinks what the layer can express.",
        "remedy": "Put norm weights and biases in a group with weight_decay=0.",
        "step": None,
        "layer": None,
        "evidence": {"params": ["blocks.0.norm1.weight", HOSTILE]},
        "source": "server",
    },
]

CHECKS = [
    {
        "id": "nonfinite",
        "title": "First non-finite value",
        "status": "ran",
        "reason": None,
        "findings": 1,
    },
    {
        "id": "warmup",
        "title": "Warmup for Adam's second moment",
        "status": "ran",
        "reason": None,
        "findings": 1,
    },
    {
        "id": "weight-decay",
        "title": "Weight decay on norm, bias, embedding",
        "status": "ran",
        "reason": None,
        "findings": 1,
    },
    {
        "id": "exploding",
        "title": "Exploding gradients",
        "status": "ran",
        "reason": None,
        "findings": 0,
    },
    {
        "id": "ema",
        "title": "EMA of weights",
        "status": "skipped",
        "reason": "no EMA model was seen",
    },
    {
        "id": "ranks",
        "title": "Replicas agree",
        "status": "skipped",
        "reason": f"a single process {HOSTILE}",
    },
]


def serve_contract(page, run_id: str, *, setup: dict | None = None, health: dict | None = None):
    """Answer the run with `setup` and /health with `health`, over the real server's answer."""
    if setup is not None:

        def run_route(route) -> None:
            response = route.fetch()
            body = response.json()
            body["setup"] = setup
            route.fulfill(response=response, json=body)

        page.route(re.compile(rf".*/api/v1/runs/{run_id}$"), run_route)
    if health is not None:
        page.route(
            re.compile(rf".*/api/v1/runs/{run_id}/health$"),
            lambda route: route.fulfill(json=health),
        )


def clipped_run(client, *, n: int = 20, config: dict | None = None) -> str:
    """A run clipped on every other step, with 4 backward passes per step and an LR panel."""
    run_id = client.create_run(project="vit", name="clipped", config=config or {})
    client.declare_layers(run_id, LAYERS)
    series = {
        "loss/train": (steps(n), [2.0 - s / n for s in range(n)]),
        "lr/group0": (steps(n), [1e-3] * n),
        "grad_norm/total": (steps(n), [1.0] * n),
        "grad_norm/total_preclip": (steps(n), [3.0 if s % 2 else 0.8 for s in range(n)]),
        "clip/observed": (steps(n), [float(s % 2) for s in range(n)]),
        "accum/backward_passes": (steps(n), [4.0] * n),
    }
    series.update({f"grad_norm/{layer}": (steps(n), [0.5] * n) for layer in LAYERS})
    client.post_points(run_id, series)
    return run_id


def facts(page) -> dict[str, str]:
    return dict(
        page.eval_on_selector_all(
            "#setup .setup-facts > div",
            "ds => ds.map(d => [d.dataset.fact, d.querySelector('dd').textContent])",
        )
    )


def test_setup_card_says_what_was_seen(dashboard, client):
    run_id = clipped_run(client)
    client.finish(run_id)
    page = dashboard.page
    serve_contract(page, run_id, setup=SETUP)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page.wait_for_function("() => document.getElementById('setup').dataset.state === 'shown'")
    wait_chart(dashboard, "chart-clipped", 20)
    page.wait_for_function(
        "() => document.querySelector('#setup [data-fact=clip] dd').textContent.startsWith('obs')"
    )
    seen = facts(page)
    assert seen["optimizer"] == "AdamW (torch.optim.adamw) \u00b7 2 param groups"
    assert seen["scheduler"] == "OneCycleLR \u00b7 1000 planned steps \u00b7 warmup 300"
    assert seen["planned"] == "1000 steps (from the scheduler)"
    assert seen["ema"] == "AveragedModel \u00b7 decay 0.999 \u00b7 horizon \u22481000 steps"
    assert seen["scaler"] == "GradScaler"
    assert seen["drop_path"].startswith("2 blocks \u00b7 rate 0\u20260.1")
    assert "blocks.1 0.1" in seen["drop_path"]
    assert seen["accum"] == "4 backward passes per optimizer step (latest)"
    assert seen["clip"] == "observed on 50% of steps (10 of 20 seen)"
    assert seen["cadence"] == "statistics every 10 steps \u00b7 histograms every 100"
    assert page.text_content("#setup-summary") == (
        "AdamW \u00b7 OneCycleLR, warmup 300 \u00b7 EMA 0.999 \u00b7 AMP \u00b7 clipped 50%"
    )

    groups = page.eval_on_selector_all(
        "#setup table.setup-groups tr",
        "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))",
    )
    # Adam groups: betas and eps shown, momentum (no group has one) left out.
    assert groups[0] == [
        "group",
        "tensors",
        "lr",
        "betas",
        "eps",
        "weight decay",
        "decayed",
    ]
    assert groups[1] == [
        "0",
        "5",
        "0.001",
        "0.9, 0.999",
        "1.000e-8",
        "0.05 decoupled",
        "1 norm \u00b7 1 bias \u00b7 1 emb.",
    ]
    assert groups[2] == ["1", "1", "0.001", "0.9, 0.999", "1.000e-8", "0", "none"]
    decayed = page.get_attribute("#setup tr[data-group='0'] td.setup-decayed", "title")
    assert decayed.split("\n") == ["blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "pos_embed"]

    # The card starts folded to its summary line, and opens on a click.
    assert page.locator("#setup-body").is_hidden()
    assert page.locator("#setup-summary").is_visible()
    page.click("#setup > summary")
    assert page.locator("#setup-body").is_visible()
    assert page.locator("img").count() == 0
    dashboard.assert_clean()


def test_gradient_norm_chart_shows_before_and_after_clipping_and_the_share_clipped(
    dashboard, client
):
    run_id = clipped_run(client)
    client.finish(run_id)
    page = dashboard.page
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-gradnorm", 40)
    heading = page.text_content("#chart-gradnorm >> xpath=.. >> h2")
    assert heading == "Global gradient norm \u2014 at optimizer.step (after clipping)"
    assert trace_names(dashboard, "chart-gradnorm") == ["after clipping", "before clipping"]
    dash = page.eval_on_selector(
        "#chart-gradnorm", "div => div.data.find(t => t.name === 'before clipping').line.dash"
    )
    assert dash == "dash"
    page.wait_for_function("() => document.getElementById('gradnorm-note').textContent !== ''")
    assert page.text_content("#gradnorm-note") == "clipped on 50% of steps (10 of 20 drawn)"
    # No setup document from this server: the card stays out of the way.
    assert page.locator("#setup").is_hidden()
    dashboard.assert_clean()


def test_unclipped_run_draws_one_norm_and_no_note(dashboard, client):
    run_id = client.create_run(project="vit", name="plain")
    client.post_points(run_id, {"grad_norm/total": (steps(10), [1.0] * 10)})
    client.finish(run_id)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-gradnorm", 10)
    assert trace_names(dashboard, "chart-gradnorm") == ["after clipping"]
    assert dashboard.page.locator("#gradnorm-note").is_hidden()
    dashboard.assert_clean()


def finding_rows(page) -> dict[str, dict]:
    found = page.eval_on_selector_all(
        "#health li.finding",
        """lis => lis.map(li => ({
            check: li.dataset.check,
            source: li.dataset.source,
            why: li.querySelector('.finding-detail').textContent,
            remedy: li.querySelector('.finding-remedy')?.textContent ?? null,
            evidence: Object.fromEntries([...li.querySelectorAll('.finding-evidence > div')]
                .map(d => [d.dataset.key, d.querySelector('dd').textContent])),
        }))""",
    )
    return {row["check"]: row for row in found}


def test_findings_show_why_remedy_evidence_and_the_checks_that_ran(dashboard, client):
    run_id = clipped_run(client)
    client.finish(run_id)
    page = dashboard.page
    serve_contract(page, run_id, health={"findings": FINDINGS, "checks": CHECKS})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "findings")

    found = finding_rows(page)
    nan = found["nonfinite-gradient"]
    assert nan["why"] == FINDINGS[0]["why"]
    assert nan["remedy"] == "What to try: Lower the LR or clip the gradients."
    assert nan["evidence"] == {"value": "NaN", "first_step": "12"}
    assert nan["source"] == "agent"
    assert found["no-warmup"]["evidence"] == {
        "beta2": "0.999",
        "peak_lr": "0.01",
        "warmup_steps": "0",
    }
    assert found["decay-on-norm-bias"]["evidence"] == {
        "params": f"blocks.0.norm1.weight, {HOSTILE}",
    }
    assert page.text_content("#health-summary") == "1 error \u00b7 1 warning \u00b7 1 info"

    # The checks: a folded summary that expands to what ran and what could not, with why.
    assert page.text_content("#health-checks > summary") == "4 checks ran \u00b7 2 could not run"
    assert page.locator("#health-checks ul").first.is_hidden()
    page.click("#health-checks > summary")
    ran = page.eval_on_selector_all(
        "#health-checks li[data-status=ran]", "ls => ls.map(l => [l.dataset.check, l.textContent])"
    )
    assert [check for check, _ in ran] == ["nonfinite", "warmup", "weight-decay", "exploding"]
    assert ran[0][1].endswith("First non-finite value \u2014 1 finding")
    skipped = page.eval_on_selector_all(
        "#health-checks li[data-status=skipped] .check-reason", "ls => ls.map(l => l.textContent)"
    )
    assert skipped == [": no EMA model was seen", f": a single process {HOSTILE}"]

    # Findings with a step are marked on the loss, LR and gradient-norm charts, by severity.
    for chart in ("chart-loss", "chart-gradnorm", "chart-lr"):
        page.wait_for_function(
            "id => document.getElementById(id).dataset.findings === '2'", arg=chart
        )
    lines = page.eval_on_selector(
        "#chart-loss",
        """div => div.layout.shapes
            .filter(s => s.name === 'findings').map(s => [s.x0, s.line.color])""",
    )
    assert sorted(lines) == [[0, "#b45309"], [12, "#b91c1c"]]
    flags = page.eval_on_selector(
        "#chart-loss", "div => div.data.find(t => t.name === 'findings').text"
    )
    assert any("NaN gradient in blocks.0.attn.qkv.weight" in text for text in flags)

    # A finding with a layer still opens that layer's charts.
    page.click("#health li[data-check='nonfinite-gradient'] button")
    page.wait_for_function("() => document.body.dataset.layer === 'blocks.0.attn.qkv.weight'")
    assert page.locator("img").count() == 0
    dashboard.assert_clean()


def test_healthy_report_says_how_many_checks_ran(dashboard, client):
    run_id = client.create_run(project="vit", name="healthy")
    client.post_points(run_id, {"loss": (steps(10), [1.0] * 10)})
    client.finish(run_id)
    page = dashboard.page
    clean = [dict(check, findings=0) for check in CHECKS if check["status"] == "ran"]
    serve_contract(page, run_id, health={"findings": [], "checks": clean + CHECKS[4:]})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "ok")
    assert page.text_content("#health-status") == "No problems found by 4 checks"
    assert page.text_content("#health-checks > summary") == "4 checks ran \u00b7 2 could not run"
    assert page.get_attribute("#chart-loss", "data-findings") == "0"
    dashboard.assert_clean()


def test_a_report_where_no_check_could_run_is_not_called_healthy(dashboard, client):
    run_id = client.create_run(project="vit", name="unchecked")
    client.finish(run_id)
    page = dashboard.page
    serve_contract(page, run_id, health={"findings": [], "checks": CHECKS[4:]})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "unchecked")
    assert page.text_content("#health-status") == "No checks could run yet"
    assert page.text_content("#health-checks > summary") == "0 checks ran \u00b7 2 could not run"
    dashboard.assert_clean()


def test_health_event_on_the_stream_updates_the_panel(dashboard, client):
    run_id = client.create_run(project="vit", name="pushed")
    client.post_points(run_id, {"loss": (steps(20), [1.0] * 20)})
    page = dashboard.page
    serve_contract(page, run_id, health={"findings": [], "checks": CHECKS[:4]})
    pushed = {"findings": [FINDINGS[1]], "checks": CHECKS}
    # One stream answer carrying a health event; the long retry keeps the browser from reopening.
    body = f"retry: 600000\nevent: health\ndata: {json.dumps(pushed)}\n\n"
    page.route(
        re.compile(rf".*/api/v1/runs/{run_id}/events\?.*"),
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=body
        ),
    )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "findings")
    assert page.get_attribute("#health", "data-pushes") == "1"
    assert [row["check"] for row in rows(dashboard)] == ["no-warmup"]
    assert page.text_content("#health-checks > summary") == "4 checks ran \u00b7 2 could not run"
    page.wait_for_function("() => document.getElementById('chart-loss').dataset.findings === '1'")
    dashboard.assert_clean()


def test_health_and_charts_stay_above_the_fold_at_1440x900(dashboard, client, request):
    config = {f"key_{i:02d}": f"value {i}" for i in range(29)}
    config["tricks"] = {"clip": {"max_norm": 1.0}, "ema": {"decay": 0.999}}
    run_id = clipped_run(client, config=config)
    client.finish(run_id)
    page = dashboard.page
    page.set_viewport_size({"width": 1440, "height": 900})
    serve_contract(page, run_id, setup=SETUP, health={"findings": FINDINGS, "checks": CHECKS})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "findings")
    page.wait_for_function("() => document.getElementById('setup').dataset.state === 'shown'")
    ids = ["health", "chart-loss", "chart-gradnorm", "run-details", "config-details", "setup"]
    box = page.evaluate(
        """ids => Object.fromEntries(ids.map(id =>
            [id, document.getElementById(id).getBoundingClientRect().toJSON()]))""",
        ids,
    )
    # Health, then the overview charts, whole on the first screen.
    assert box["health"]["bottom"] <= box["chart-loss"]["top"], box
    for chart in ("chart-loss", "chart-gradnorm"):
        assert box[chart]["bottom"] <= 900, box
    # Config and setup come after them, each folded to one line that opens on a click.
    assert box["run-details"]["top"] >= box["chart-loss"]["bottom"], box
    line = page.eval_on_selector(
        "#config-details > summary",
        "s => [s.getBoundingClientRect().height, getComputedStyle(s).whiteSpace]",
    )
    assert line[0] < 40 and line[1] == "nowrap", line
    assert page.text_content("#config-summary").startswith("29 keys \u00b7 key_00=value 0 ")
    assert page.locator("#config-table").is_hidden()
    assert page.locator("#setup-body").is_hidden()
    assert page.locator("#setup-summary").is_visible()
    artifacts = Path(request.config.rootpath) / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "run-page-1440x900.png"))
    page.click("#config-details > summary")
    assert page.locator("#config-table").is_visible()
    assert page.locator("#config-table tr").count() == 29
    dashboard.assert_clean()


def test_setup_and_agent_findings_seeded_through_the_api(dashboard, client):
    run_id = clipped_run(client)
    finding = AgentFinding(
        check="nonfinite-weight",
        severity="error",
        title=f"Non-finite weight in {LAYERS[0]} at step 7",
        why="A weight went NaN; every later step reads it.",
        remedy="Find what wrote it: the step before 7 had finite weights.",
        step=7,
        layer=LAYERS[0],
        evidence={"first_step": 7},
    )
    client.declare_setup(run_id, copy.deepcopy(SETUP))
    client.declare_findings(run_id, [finding])
    client.finish(run_id)
    page = dashboard.page
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page.wait_for_function("() => document.getElementById('setup').dataset.state === 'shown'")
    assert facts(page)["optimizer"] == "AdamW (torch.optim.adamw) \u00b7 2 param groups"
    wait_health(dashboard, "findings")
    found = finding_rows(page)
    row = found["nonfinite-weight"]
    assert row["source"] == "agent"
    assert row["remedy"] == f"What to try: {finding.remedy}"
    assert row["evidence"] == {"first_step": "7"}
    # The server lists its checks beside the findings.
    assert re.fullmatch(
        r"\d+ checks? ran( \u00b7 \d+ could not run)?",
        page.text_content("#health-checks > summary"),
    )
    page.wait_for_function(
        "() => Number(document.getElementById('chart-loss').dataset.findings) >= 1"
    )
    dashboard.assert_clean()


def test_the_real_stream_pushes_health_as_findings_appear(dashboard, client):
    run_id = client.create_run(project="vit", name="live-push")
    client.declare_layers(run_id, LAYERS)
    n = 20
    series = {"loss": (steps(n), [1.0] * n)}
    series.update({f"grad_norm/{layer}": (steps(n), [0.5] * n) for layer in LAYERS})
    client.post_points(run_id, series)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'live'")
    bad = {"loss": (steps(5, n), [1.0] * 5)}
    bad[f"grad_norm/{LAYERS[0]}"] = (steps(5, n), [0.5] * 5)
    bad[f"grad_norm/{LAYERS[1]}"] = (steps(5, n), [float("nan")] * 5)
    client.post_points(run_id, bad)
    wait_health(dashboard, "findings", timeout=20_000)
    # The server sends the new report on the stream (the page may also have polled meanwhile).
    page.wait_for_function(
        "() => Number(document.getElementById('health').dataset.pushes || 0) >= 1",
        timeout=20_000,
    )
    assert "nonfinite-gradient" in [row["check"] for row in rows(dashboard)]
    page.wait_for_function(
        "() => Number(document.getElementById('chart-loss').dataset.findings) >= 1"
    )
    client.finish(run_id)
    dashboard.assert_clean()
