"""The runs list: rows, links, filters, live status, empty state."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def rows(dashboard) -> list[dict[str, str]]:
    return dashboard.page.eval_on_selector_all(
        "#runs-body tr",
        """trs => trs.map(tr => {
            const cell = (col) => tr.querySelector(`td[data-col="${col}"]`);
            return {
                id: tr.dataset.runId,
                project: cell('project').textContent,
                name: cell('name').querySelector('a').textContent,
                label: cell('name').textContent,
                href: cell('name').querySelector('a').getAttribute('href'),
                status: cell('status').textContent,
                loss: cell('main').querySelector('.main-value').textContent,
                duration: cell('duration').textContent,
                step: cell('step').textContent,
            };
        })""",
    )


def wait_rows(dashboard, count: int) -> list[dict[str, str]]:
    dashboard.page.wait_for_function(
        "n => document.querySelectorAll('#runs-body tr').length === n", arg=count
    )
    return rows(dashboard)


def test_runs_page_lists_runs_with_links_status_and_last_loss(dashboard, client):
    alpha = client.create_run(project="vision", name="alpha")
    client.post_points(alpha, {"loss/train": ([0, 1, 2], [2.0, 1.0, 0.5])})
    beta = client.create_run(project="vision", name="beta")
    client.finish(beta)
    gamma = client.create_run(project="nlp", name="gamma")

    dashboard.goto("/")
    listed = {row["name"]: row for row in wait_rows(dashboard, 3)}

    assert listed["alpha"]["href"] == f"/runs/{alpha}"
    assert listed["alpha"]["project"] == "vision"
    assert listed["alpha"]["status"] == "running"
    assert listed["alpha"]["loss"] == "0.5"
    assert listed["beta"]["status"] == "finished"
    assert listed["gamma"]["id"] == gamma
    assert listed["gamma"]["project"] == "nlp"
    dashboard.page.click("text=alpha")
    dashboard.page.wait_for_url(f"**/runs/{alpha}")
    dashboard.page.wait_for_function("() => document.body.dataset.loaded === 'true'")
    dashboard.assert_clean()


def test_runs_page_filters_by_project_and_status(dashboard, client):
    client.create_run(project="vision", name="alpha")
    client.finish(client.create_run(project="vision", name="beta"))
    client.create_run(project="nlp", name="gamma")

    dashboard.goto("/")
    wait_rows(dashboard, 3)
    page = dashboard.page
    options = page.eval_on_selector_all("#filter-project option", "os => os.map(o => o.value)")
    assert options == ["", "nlp", "vision"]

    page.select_option("#filter-project", "vision")
    assert sorted(row["name"] for row in wait_rows(dashboard, 2)) == ["alpha", "beta"]
    page.select_option("#filter-status", "finished")
    assert [row["name"] for row in wait_rows(dashboard, 1)] == ["beta"]
    page.select_option("#filter-project", "")
    assert [row["name"] for row in wait_rows(dashboard, 1)] == ["beta"]
    page.select_option("#filter-status", "running")
    assert sorted(row["name"] for row in wait_rows(dashboard, 2)) == ["alpha", "gamma"]
    assert "status=running" in page.url
    dashboard.assert_clean()


def test_runs_page_updates_status_without_reload(dashboard, client):
    run_id = client.create_run(project="vision", name="alpha")
    dashboard.goto("/")
    assert wait_rows(dashboard, 1)[0]["status"] == "running"

    client.finish(run_id, status="failed")
    dashboard.page.wait_for_function(
        "() => document.querySelector('#runs-body td[data-col=status]').textContent === 'failed'"
    )
    dashboard.assert_clean()


def test_runs_page_without_runs_says_how_to_start(dashboard):
    dashboard.goto("/")
    empty = dashboard.page.locator("#empty-state")
    empty.wait_for(state="visible")
    assert "trickscope demo" in empty.inner_text()
    assert dashboard.page.locator("#runs-table").is_hidden()
    dashboard.assert_clean()
