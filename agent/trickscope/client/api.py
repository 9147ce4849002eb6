"""``trickscope.Api``: read runs, their history and their findings from a server."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from trickscope.client._filters import Filters, build_query, rest_sort
from trickscope.client._frames import runs_table, want_frame
from trickscope.client._http import Http, path_of
from trickscope.client._records import RunList, RunRecord

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_PAGE = 200  # the server's largest page of runs
DEFAULT_PAGE_POINTS = 100_000  # the server's default cap on points per request


class Api:
    """A read client of a trickscope server's REST API (``/api/v1``).

    Standard library HTTP, no torch: it runs on a laptop that only looks at runs. pandas is
    optional (tables come back as DataFrames when it is installed); pyarrow reads long
    histories from the Parquet export.

    Args:
        url: The server (default: ``TRICKSCOPE_URL``, else ``http://127.0.0.1:8000``).
        token: A read (or write) token, sent as ``Authorization: Bearer <token>`` (default:
            ``TRICKSCOPE_TOKEN``; a server without tokens needs none).
        timeout: Seconds to wait on the server for each request.

    Example:
        >>> api = trickscope.Api()
        >>> runs = api.runs(project="digits", filters={"config.optimizer": "sgd"})
        >>> history = runs[0].history(["loss/train", "lr/group0"])   # every point
        >>> [f.title for f in runs[0].findings()]
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        url = url or os.environ.get("TRICKSCOPE_URL") or DEFAULT_URL
        token = token if token is not None else os.environ.get("TRICKSCOPE_TOKEN") or None
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be a positive number of seconds")
        self._http = Http(url, token=token, timeout=timeout)
        # Points per request when reading every point; lowered on its own if the server caps
        # requests lower (TRICKSCOPE_MAX_POINTS).
        self.page_points = DEFAULT_PAGE_POINTS
        self.page_size = MAX_PAGE  # runs per request of a listing

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._http.url

    def __repr__(self) -> str:
        return f"Api(url={self.url!r})"

    def close(self) -> None:
        """Close the connection kept open between requests (reopened when needed)."""
        self._http.close_connection()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, run_id: str) -> RunRecord:
        """One run by id (its metadata now; its data through the record's methods).

        Raises:
            ApiError: no such run (status 404), or another refusal.
        """
        return RunRecord(self, self._http.get_json(path_of("runs", run_id)))

    def runs(
        self,
        project: str | None = None,
        filters: Filters = None,
        sort: str | None = None,
        tags: Iterable[str] | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> RunList:
        """Runs matching every filter, in ``sort`` order (newest first by default).

        The filters are the REST API's (``GET /api/v1/runs``), in either of two spellings:

        * a dict: ``"config.<dotted.key>": value`` matches a config value (a string, number,
          bool or None); ``"metric.<name>": "<op><number>"`` compares a series' latest value,
          op one of ``<``, ``<=``, ``>``, ``>=``, ``=``; a bare number means ``=``, a list
          of conditions must all hold::

              api.runs(filters={"config.optimizer.name": "adamw", "config.lr": 0.1,
                                "metric.loss/train": "<0.5", "metric.eval/acc": [">0.9", "<1"]})

        * a list of the REST parameters as they appear in a query string::

              api.runs(filters=["config=optimizer.name:adamw", "metric=loss/train<0.5",
                                "tag=baseline"])

        Args:
            project: Only this project's runs.
            filters: See above.
            sort: ``created_at``, ``name``, ``status``, ``config:<dotted.key>`` or
                ``metric:<name>`` (``config.<key>`` / ``metric.<name>`` work too), ``-`` in
                front for descending. Runs without the key come last.
            tags: Runs that carry every one of these tags.
            status: running, finished, failed or crashed.
            limit: At most this many runs (default: all).

        Returns:
            A :class:`RunList`: a sequence that fetches pages of runs (up to 200 each) as it
            is iterated; ``len()`` and :meth:`RunList.to_frame` fetch them all.

        Raises:
            ValueError: a filter the REST API cannot express (raised here, before any request).
            ApiError: the server refused the query (e.g. 422 for an unknown sort), raised when
                the first page is fetched.
        """
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise ValueError(f"limit={limit!r} must be a non-negative int or None")
        query = build_query(filters, tags)
        params: dict[str, Any] = {
            "project": project,
            "status": status,
            "sort": rest_sort(sort),
            "tag": query.tag,
            "config": query.config,
            "metric": query.metric,
        }
        page = self.page_size if limit is None else max(1, min(limit, self.page_size))
        return RunList(self, params, limit, page)

    def runs_frame(
        self,
        project: str | None = None,
        filters: Filters = None,
        sort: str | None = None,
        tags: Iterable[str] | None = None,
        status: str | None = None,
        limit: int | None = None,
        as_frame: bool | None = True,
    ) -> Any:
        """:meth:`runs` as a table, one row per run: ``config.<key>`` and ``latest.<series>``
        columns beside the run's fields (see :meth:`RunList.to_frame`)."""
        runs = self.runs(project, filters, sort, tags, status, limit)
        return runs_table(runs, as_frame=want_frame(as_frame))
