"""uvicorn's server, woken once a second while idle instead of ten times.

uvicorn's main loop sleeps 0.1 s between looks at whether it should exit (and refreshes its
``Date`` header every tenth look). On the 2-core machine of ``docs/benchmarks.md`` those ten
wake-ups a second were all of an idle server's CPU, ~2.3 ms per second: more than an unfollowed
training run costs it. Here the loop looks once a second, and a signal wakes it at once, so a
shutdown is as prompt as before.

Only the single-process server uses it: with ``--workers``, uvicorn's supervisor builds the
workers' servers itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_SECONDS = 1.0
_TICKS_PER_SECOND = 10  # what uvicorn's on_tick counts in (it refreshes the Date header at 10)


class QuietServer(uvicorn.Server):
    """A :class:`uvicorn.Server` whose idle loop wakes every :data:`TICK_SECONDS`."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + _TICKS_PER_SECOND) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wake.set)
