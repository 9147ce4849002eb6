"""Many live viewers of one run on a real ``trickscope serve``: each gets every point, in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.helpers import LiveServer, run_async, start_server, stop_server
from tests.unit.server.conftest import point_batch
from trickscope_wire import dumps

pytestmark = pytest.mark.timeout(90)

VIEWERS = 60
BATCHES = 15
LIVE_TARGET_SECONDS = 1.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(f"sqlite:///{tmp_path / 'trickscope.db'}", tmp_path / "server.log")
    yield live
    stop_server(live)


async def _watch(
    client: httpx.AsyncClient, run_id: str, arrivals: dict[int, float], opened: asyncio.Event
) -> list[int]:
    """Follow the run until the last batch arrives; steps in order, arrival times by step."""
    steps: list[int] = []
    async with client.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
        opened.set()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "points":
                now = time.monotonic()
                new = orjson.loads(line[len("data: ") :])["series"]["loss"]["step"]
                steps += new
                for step in new:
                    arrivals[step] = max(arrivals.get(step, 0.0), now)
                if steps and steps[-1] == BATCHES - 1:
                    return steps
    return steps


def test_sixty_viewers_get_every_point_once_within_the_live_target(server: LiveServer) -> None:
    async def scenario() -> None:
        headers = {"Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=VIEWERS + 5)
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, limits=limits, timeout=30
        ) as client:
            created = await client.put("/api/v1/runs/r1", json={"project": "p", "name": "n"})
            assert created.status_code == 200
            arrivals: dict[int, float] = {}  # the latest arrival of each step among viewers
            opened = [asyncio.Event() for _ in range(VIEWERS)]
            viewers = [
                asyncio.create_task(_watch(client, "r1", arrivals, event)) for event in opened
            ]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 30)
            sent: dict[int, float] = {}
            for step in range(BATCHES):  # ~10 batches a second
                body = dumps(point_batch(f"b{step}", {"loss": ([step], [1.0])}))
                sent[step] = time.monotonic()
                answer = await client.post("/api/v1/runs/r1/points", content=body)
                assert answer.status_code == 200
                await asyncio.sleep(0.1)
            seen = await asyncio.wait_for(asyncio.gather(*viewers), 30)
        assert all(steps == list(range(BATCHES)) for steps in seen)
        delays = {step: arrivals[step] - sent[step] for step in sent}
        assert max(delays.values()) <= LIVE_TARGET_SECONDS, delays

    run_async(scenario)
