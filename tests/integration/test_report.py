"""``trickscope report``: a run read over HTTP into one self-contained HTML file."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.browser.conftest import Client
from trickscope_cli.errors import CliError
from trickscope_cli.report_cmd import json_for_html, script_safe
from trickscope_cli.report_page import module_bundle

WEB = Path(__file__).resolve().parents[2] / "web"

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
    """A finished run with a hostile name and config, a warmup, per-layer statistics, ε dominance,
    an update ratio and histograms: something for every part of the run page."""
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
            "update_ratio/conv.weight": (list(range(30)), [1e-3] * 30),
            "opt/eps_dominance/conv.weight": (list(range(30)), [0.2] * 30),
        },
    )
    client.post_histograms(
        run_id,
        "grad_hist/conv.weight",
        [0, 10, 20],
        [-1.0, -1.0, -1.0],
        [1.0, 1.0, 1.0],
        [[1.0, 2.0, 3.0, 4.0]] * 3,
    )
    client.finish(run_id)
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
    # No name can end a block: exactly the four script elements close (data, modules, Plotly,
    # loader), and the hostile name's markup appears nowhere as markup.
    assert html.count("</script>") == 4
    assert "<img" not in html
    data = json.loads(block(html, "trickscope-data"))
    assert data["run"]["name"] == HOSTILE
    assert (
        set(data["points"])
        == {s["name"] for s in data["series"]}
        == {
            "loss/train",
            "lr/group0",
            "loss/<b>odd</b>",
            "grad_norm/conv.weight",
            "grad_norm/fc.weight",
            "update_ratio/conv.weight",
            "opt/eps_dominance/conv.weight",
        }
    )
    assert data["points"]["loss/<b>odd</b>"]["value"] == [1.0, "NaN", "Infinity"]
    assert sorted(data["heatmaps"]) == ["grad_norm", "update_ratio"]
    assert data["heatmaps"]["grad_norm"]["layers"] == ["conv.weight", "fc.weight"]
    assert data["histograms"]["grad_hist/conv.weight"]["step"] == [0, 10, 20]
    assert data["health"]["bands"]["update_ratio"]["low"] == 1e-5
    # The run page's own modules draw it, with the inline data source in place of the REST client.
    modules = json.loads(block(html, "trickscope-modules"))
    assert modules["entry"] == "run.js"
    assert {"run.js", "run-layers.js", "line-chart.js", "report-api.js", "api.js"} <= set(
        modules["modules"]
    )
    assert modules["modules"]["run.js"]["source"] == (WEB / "js" / "run.js").read_text()


def block(html: str, block_id: str) -> str:
    found = re.search(
        rf'<script type="application/json" id="{block_id}">(.*?)</script>', html, re.S
    )
    assert found is not None, block_id
    return found.group(1)


def test_every_page_module_reads_the_inline_data_and_only_it_the_rest_client():
    bundle = module_bundle(WEB / "js")
    readers = [name for name, module in bundle["modules"].items() if "api.js" in module["imports"]]
    assert len(readers) > 1, readers  # the pages' modules, and report-api.js itself
    for name in readers:
        expected = "api.js" if name == "report-api.js" else "report-api.js"
        assert bundle["modules"][name]["imports"]["api.js"] == expected, name
    assert "session.js" not in bundle["modules"]  # the page's login handling needs a server


def test_a_module_cycle_is_refused(tmp_path: Path):
    (tmp_path / "run.js").write_text('import { b } from "./b.js";\n')
    (tmp_path / "b.js").write_text('import { a } from "./run.js";\nexport const b = 1;\n')
    with pytest.raises(CliError, match="cycle"):
        module_bundle(tmp_path)


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


def test_report_draws_a_progress_bar_over_its_reads_on_a_terminal(live_server, tmp_path: Path):
    run_id = make_run(Client(live_server.url))
    primary, replica = pty.openpty()  # stderr is a terminal, stdout a pipe
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    drawn = b""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "trickscope_cli", "report", run_id, "--url", live_server.url]
            + ["-o", str(tmp_path / "r.html")],
            stdout=subprocess.PIPE,
            stderr=replica,
            timeout=60,
            text=True,
        )
        os.close(replica)
        replica = -1
        while select.select([primary], [], [], 0.5)[0]:
            try:
                piece = os.read(primary, 65536)
            except OSError:  # the terminal closed once everything was read
                break
            if not piece:
                break
            drawn += piece
    finally:
        if replica != -1:
            os.close(replica)
        os.close(primary)
    assert done.returncode == 0
    # A bar over the reads: 7 series, 2 heatmaps, 1 histogram name and the health report.
    text = drawn.decode()
    assert f"report {run_id[:8]}: " in text and "/11 [" in text and "read/s]" in text
