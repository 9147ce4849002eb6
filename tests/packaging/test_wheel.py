"""The distribution holds only trickscope's import packages and the web assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_TOP_LEVEL = ("trickscope/", "trickscope_wire/", "trickscope_server/", "trickscope_cli/")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (built,) = out.glob("trickscope-*.whl")
    return built


def test_wheel_holds_only_trickscope_packages_and_web_assets(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    strays = [n for n in names if not n.startswith(ALLOWED_TOP_LEVEL) and ".dist-info/" not in n]
    assert strays == []
    for required in (
        "trickscope/__init__.py",
        "trickscope/py.typed",
        "trickscope_wire/__init__.py",
        "trickscope_server/app.py",
        "trickscope_server/web/index.html",
        "trickscope_server/web/run.html",
        # The Plotly bundle the pages load and the report inlines, with its licence.
        "trickscope_server/web/vendor/plotly-cartesian.min.js",
        "trickscope_server/web/vendor/LICENSE",
        "trickscope_cli/main.py",
    ):
        assert required in names
    assert not any(n.startswith("trickscope_server/web/") and "__pycache__" in n for n in names)
    # Every page, module and stylesheet the checkout serves: a page left out of the wheel would
    # answer 404 to an installed server while the checkout's tests pass.
    assets = [
        f"trickscope_server/web/{path.relative_to(ROOT / 'web').as_posix()}"
        for path in (ROOT / "web").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert {"trickscope_server/web/compare.html", "trickscope_server/web/js/compare.js"} <= set(
        assets
    )
    assert sorted(set(assets) - set(names)) == []


def test_wheel_declares_the_trickscope_command_and_no_torch_dependency(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    dist_info = next(n.split("/")[0] for n in archive.namelist() if ".dist-info/" in n)
    entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "trickscope = trickscope_cli.main:main" in entry_points
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    hard_requirements = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not any("torch" in line for line in hard_requirements)


def test_editable_install_imports_from_the_checkout() -> None:
    import trickscope
    import trickscope_server
    import trickscope_wire

    for module, folder in (
        (trickscope, "agent"),
        (trickscope_wire, "agent"),
        (trickscope_server, "server"),
    ):
        assert Path(module.__file__).resolve().is_relative_to(ROOT / folder)
