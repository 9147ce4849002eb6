"""Which rank this process is, and how the ranks come to share one run id.

The end-to-end behaviour, with real gloo processes, is in ``tests/integration/test_distributed.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

import trickscope
from trickscope import distributed
from trickscope.distributed import Rank

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")


@pytest.fixture
def single_process_group(tmp_path: Path) -> Iterator[None]:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_outside_a_group_of_two_or_more_there_is_no_rank(single_process_group: None) -> None:
    assert distributed.current() is None  # one process: an ordinary run
    assert Rank(0, 4, "nccl").primary and not Rank(3, 4, "nccl").primary


def test_the_ranks_read_rank_0s_run_id_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 2)
    monkeypatch.setattr(distributed, "_default_store", lambda: store)
    monkeypatch.setattr(distributed, "_inits", iter([7, 7, 8]))  # the 7th init, on two ranks
    assert distributed.share_run_id(Rank(0, 2, "gloo"), "a" * 32) == "a" * 32
    assert distributed.share_run_id(Rank(1, 2, "gloo"), "b" * 32) == "a" * 32
    # A rank whose rank 0 never publishes gives up after the timeout, with an error.
    monkeypatch.setattr(distributed, "RUN_ID_TIMEOUT", timedelta(milliseconds=200))
    with pytest.raises(Exception, match="(?i)timeout|wait"):
        distributed.share_run_id(Rank(1, 2, "gloo"), "c" * 32)


def test_without_the_store_the_run_id_is_broadcast(
    single_process_group: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed, "_default_store", lambda: None)
    assert distributed.share_run_id(Rank(0, 1, "gloo"), "e" * 32) == "e" * 32


def test_init_before_the_process_group_warns_that_each_rank_gets_a_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        run = trickscope.init(project="p", offline=True, journal_dir=str(tmp_path))
        run.finish()
    assert "call trickscope.init after init_process_group" in caplog.text
    assert run.rank is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched_but_not_initialised({"WORLD_SIZE": "1"})
    assert not distributed.launched_but_not_initialised({"WORLD_SIZE": "many"})
