"""Dashboard pages, static files and the health probe (the Plotly bundle: test_plotly_bundle)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from trickscope_server.config import Settings, default_web_dir

pytestmark = pytest.mark.timeout(60)


def test_pages_are_served_with_a_content_security_policy(client: TestClient) -> None:
    for path, title in (("/", "runs"), ("/runs/abc123", "run")):
        response = client.get(path)
        assert response.status_code == 200
        assert f"<title>{title}</title>" in response.text
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'self'" in csp


def test_static_files_come_from_disk(client: TestClient) -> None:
    assert client.get("/static/app.js").text == "export const x = 1;\n"
    assert client.get("/static/missing.js").status_code == 404


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/runs/{run_id}/points" in paths
    assert "/api/v1/runs/{run_id}/heatmap" in paths


def test_settings_read_the_environment_and_default_to_a_checkout_web_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRICKSCOPE_PORT", "9123")
    monkeypatch.setenv("TRICKSCOPE_DATABASE_URL", "sqlite:///x.db")
    settings = Settings()
    assert settings.port == 9123
    assert settings.database_url == "sqlite:///x.db"
    assert Settings(port=1).port == 1  # keyword arguments (CLI flags) win over the environment
    assert default_web_dir().name == "web"


def test_the_compare_page_is_served_with_a_csp_and_is_a_problem_when_missing(
    client: TestClient, settings: Settings
) -> None:
    missing = client.get("/compare", params={"runs": "a,b"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    (settings.web_dir / "compare.html").write_text("<!doctype html><title>compare</title>")
    response = client.get("/compare", params={"runs": "a,b"})
    assert response.status_code == 200
    assert "<title>compare</title>" in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
