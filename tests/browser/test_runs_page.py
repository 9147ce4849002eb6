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


def test_run_names_show_the_config_keys_that_differ(dashboard, client):
    base = {"optimizer": {"name": "adamw"}, "batch": 64, "epochs": 3}
    client.create_run(name="train", config={**base, "lr": 0.01})
    client.create_run(name="train", config={**base, "lr": 0.1, "optimizer": {"name": "sgd"}})
    dashboard.goto("/")
    labels = sorted(row["label"] for row in wait_rows(dashboard, 2))
    # batch and epochs are equal in view, so they do not name the runs.
    assert labels == [
        "train \u00b7 lr=0.01 optimizer.name=adamw",
        "train \u00b7 lr=0.1 optimizer.name=sgd",
    ]
    dashboard.page.fill("#filter-config", "optimizer.name:sgd")
    # One run in view: nothing differs, the name stands alone.
    assert [row["label"] for row in wait_rows(dashboard, 1)] == ["train"]
    dashboard.assert_clean()


def header_cols(dashboard) -> list[str]:
    return dashboard.page.eval_on_selector_all(
        "#runs-head th", "ths => ths.map(th => th.dataset.col)"
    )


def test_chosen_columns_persist_per_project_and_sort_by_a_config_column(dashboard, client):
    for name, batch, acc in (("a", 32, [0.2, 0.9, 0.5]), ("b", 128, [0.1, 0.4]), ("c", 64, [0.7])):
        run_id = client.create_run(project="vision", name=name, config={"batch": batch})
        client.post_points(run_id, {"eval/acc": (list(range(len(acc))), acc)})
    dashboard.goto("/?project=vision")
    wait_rows(dashboard, 3)
    page = dashboard.page
    page.click("#column-picker summary")
    page.fill("#column-search", "batch")
    assert page.eval_on_selector_all(
        "#column-options input", "bs => bs.map(b => b.dataset.key)"
    ) == ["config:batch"], "the search narrows the list"
    page.check("#column-options input[data-key='config:batch']")
    page.fill("#column-search", "eval/acc")
    page.check("#column-options input[data-key='max:eval/acc']")
    page.wait_for_function("() => document.querySelector(\"th[data-col='max:eval/acc']\")")

    page.reload()
    wait_rows(dashboard, 3)
    assert header_cols(dashboard)[7:9] == ["config:batch", "max:eval/acc"]
    page.click("th[data-col='config:batch'] button.th-sort")  # ascending first
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-body tr')]"
        ".map(tr => tr.querySelector('a').textContent).join() === 'a,c,b'"
    )
    assert "sort=config%3Abatch" in page.url
    maxima = page.eval_on_selector_all(
        "#runs-body td[data-col='max:eval/acc']", "tds => tds.map(td => td.textContent)"
    )
    assert maxima == ["0.9", "0.7", "0.4"]
    # A column's filter button starts a filter on it in the filter bar.
    page.click("th[data-col='config:batch'] button[aria-label='filter by batch']")
    assert page.input_value("#filter-config") == "batch:"
    page.type("#filter-config", "64")
    assert [row["name"] for row in wait_rows(dashboard, 1)] == ["c"]
    page.fill("#filter-config", "")
    wait_rows(dashboard, 3)
    # Another project has a view of its own.
    page.select_option("#filter-project", "")
    page.wait_for_function(
        "() => !document.querySelector(\"#runs-head th[data-col='config:batch']\")"
    )
    dashboard.assert_clean()


def test_sparklines_draw_the_main_metric_from_one_batched_read(dashboard, client, live_server):
    long_run = client.create_run(name="long")
    n = 400
    client.post_points(
        long_run, {"loss/train": (list(range(n)), [1.0 / (1 + s) for s in range(n)])}
    )
    short_run = client.create_run(name="short")
    client.post_points(short_run, {"loss": ([0, 1, 2, 3, 4], [5.0, 4.0, 3.5, 3.0, 2.0])})
    client.create_run(name="empty")
    requests: list[str] = []
    dashboard.page.on(
        "request", lambda r: requests.append(r.url) if "/api/v1/sparklines" in r.url else None
    )
    dashboard.goto("/")
    wait_rows(dashboard, 3)
    page = dashboard.page
    page.wait_for_function("() => document.body.dataset.sparklines === 'true'")
    drawn = page.eval_on_selector_all(
        "#runs-body tr",
        """trs => Object.fromEntries(trs.map(tr => {
            const svg = tr.querySelector('svg.sparkline');
            const d = svg ? svg.querySelector('path').getAttribute('d') : '';
            return [tr.querySelector('a').textContent,
                    svg ? [svg.dataset.name, +svg.dataset.points, (d.match(/[ML]/g) || []).length]
                        : null];
        }))""",
    )
    assert drawn["short"] == ["loss", 5, 5]
    assert drawn["long"][0] == "loss/train"
    assert 40 <= drawn["long"][1] <= 48 and drawn["long"][2] == drawn["long"][1]
    assert drawn["empty"] is None
    assert len(requests) == 1, "one request for the whole table"
    # The main metric can be chosen: the sparklines follow it.
    page.fill("#main-metric", "loss")
    page.wait_for_function(
        "() => document.querySelectorAll('svg.sparkline').length === 1"
        " && document.querySelector('svg.sparkline').dataset.name === 'loss'"
    )
    dashboard.assert_clean()


def test_crashed_status_duration_and_step(dashboard, client):
    crashed = client.create_run(name="boom")
    client.post_points(crashed, {"loss": ([0, 10, 250], [1.0, 0.5, 0.25])})
    client.finish(crashed, status="crashed")
    client.create_run(name="live")
    dashboard.goto("/")
    listed = {row["name"]: row for row in wait_rows(dashboard, 2)}
    assert listed["boom"]["status"] == "crashed"
    assert listed["boom"]["step"] == "250"
    assert listed["live"]["step"] == "\u2014"
    page = dashboard.page
    page.select_option("#filter-status", "crashed")
    assert [row["name"] for row in wait_rows(dashboard, 1)] == ["boom"]
    page.select_option("#filter-status", "running")
    wait_rows(dashboard, 1)
    # A running run's duration advances between refreshes.
    page.wait_for_function(
        "() => /^[1-9]\\d*s$/.test(document.querySelector('td[data-col=duration]').textContent)",
        timeout=5000,
    )
    dashboard.assert_clean()
