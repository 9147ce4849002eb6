"""``trickscope report``: a run read over HTTP into one self-contained HTML file."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.conftest import Client
from trickscope_cli.report_cmd import json_for_html, script_safe

pytestmark = pytest.mark.timeout(120)

HOSTILE = "</script><img src=x onerror=alert(1)>"


def report(url: str, run_id: str, output: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "report", run_id, "-o", str(output), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_run(client: Client) -> str:
    run_id = client.create_run(
        project="vision",
        name=HOSTILE,
        config={"<!--x": "</SCRIPT>", "tricks": {"schedule": {"warmup_steps": 5}}},
    )
    client.declare_layers(run_id, ["conv.weight", "fc.weight"])
    client.post_points(
        run_id,
        {
            "loss/train": (list(range(30)), [1.0 / (s + 1) for s in range(30)]),
            "lr/group0": (list(range(30)), [0.1] * 30),
            "loss/<b>odd</b>": ([0, 1, 2], [1.0, math.nan, math.inf]),
            "grad_norm/conv.weight": (list(range(30)), [0.5] * 30),
            "grad_norm/fc.weight": (list(range(30)), [0.25] * 30),
        },
    )
    return run_id


def test_report_writes_one_self_contained_file(live_server, tmp_path: Path):
    run_id = make_run(Client(live_server.url))
    output = tmp_path / "out" / "run.html"
    result = report(live_server.url, run_id, output)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    html = output.read_text(encoding="utf-8")
    # Plotly is inline and nothing is loaded from anywhere.
    assert "Plotly" in html and len(html) > 1_000_000
    assert not re.search(r"<script[^>]*\ssrc=", html)
    assert not re.search(r"<link[^>]*href=", html)
    # The data block cannot be ended by a name: exactly the three script elements close.
    assert html.count("</script>") == 3
    assert "<img" not in html
    block = re.search(
        r'<script type="application/json" id="trickscope-data">(.*?)</script>', html, re.S
    )
    data = json.loads(block.group(1))
    assert data["run"]["name"] == HOSTILE
    names = {s["name"]: s for s in data["series"]}
    assert set(names) == {"loss/train", "lr/group0", "loss/<b>odd</b>"}
    assert names["loss/<b>odd</b>"]["value"] == [1.0, "NaN", "Infinity"]
    assert [h["stat"] for h in data["heatmaps"]] == ["grad_norm"]
    assert data["heatmaps"][0]["layers"] == ["conv.weight", "fc.weight"]


def test_report_of_an_unknown_run_fails_with_a_message(live_server, tmp_path: Path):
    result = report(live_server.url, "0" * 32, tmp_path / "x.html")
    assert result.returncode == 2
    assert "404" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.html").exists()


def test_report_without_a_server_fails_with_a_message(tmp_path: Path):
    result = report("http://127.0.0.1:9", "0" * 32, tmp_path / "x.html")
    assert result.returncode == 2
    assert "could not reach" in result.stderr


def test_escaping_keeps_script_text_inert():
    text = json_for_html({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}
    assert script_safe("x = '</SCRIPT>' + '<!--'") == "x = '<\\/SCRIPT>' + '<\\!--'"
