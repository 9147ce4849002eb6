"""Reading a few series' block records out of a run's packed row: the wanted records only, found
by id wherever they lie, also when a series id's bytes occur inside an earlier record (a count
or a step equal to the id), on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi import FastAPI

from trickscope_server.storage import block_summaries
from trickscope_server.storage.block_summaries import NO_ROW, NO_STEP, RECORD, RunSummaries

pytestmark = pytest.mark.timeout(60)


def _records(rows: list[tuple[int, int, int, float]]) -> np.ndarray:
    """Records of (id, count, last step, last value), sorted by id as the ingest keeps them."""
    recs = np.zeros(len(rows), dtype=RECORD)
    for i, (sid, count, last, value) in enumerate(rows):
        recs[i] = (sid, count, 0, last, value, value, value, NO_STEP, NO_ROW)
    return recs


def test_records_are_found_by_id_even_where_the_ids_bytes_occur_earlier(
    app: FastAPI, make_run
) -> None:
    make_run("r")
    make_run("other")
    # Series 41's count is 42 and series 42's last step is 43: the bytes of ids 42 and 43 occur
    # inside earlier records before their own. Series 44 has an emptied record (count 0).
    recs = _records([(41, 42, 5, 1.5), (42, 1, 43, -2.0), (43, 3, 9, float("inf")), (44, 0, 0, 0)])
    db = app.state.db
    with db.write() as tx:
        block_summaries.save(tx, RunSummaries("r", recs, dirty=True))
        other = _records([(42, 7, 7, 7.0)])  # same id in another run: never mixed up
        block_summaries.save(tx, RunSummaries("other", other, dirty=True))
    with db.reader() as session:
        found = block_summaries.records_of_series(
            session, {"r": [43, 42, 41, 44, 45], "absent": [1]}
        )
        assert sorted(found) == [41, 42, 43]
        assert (int(found[41]["count"]), float(found[41]["last_value"])) == (42, 1.5)
        assert (int(found[42]["last"]), float(found[42]["last_value"])) == (43, -2.0)
        assert float(found[43]["last_value"]) == float("inf")
        only_other = block_summaries.records_of_series(session, {"other": [42]})
        assert int(only_other[42]["count"]) == 7
        assert block_summaries.records_of_series(session, {"r": []}) == {}
