"""The cyclic collector's policy for a long-running server: one place, called once at start.

A full (generation-2) collection scans every tracked object that survived the younger ones and
holds the GIL while it does, so ingest and every live stream wait for it. Two things keep those
scans short and rare:

- What is alive once the app is built (the app, SQLAlchemy, FastAPI and their modules, ~140k
  objects) lives as long as the server: frozen, a full collection no longer scans it.
- Each open live stream keeps a few hundred objects alive (its connection, task, response and
  subscriber), and they end up in the oldest generation. CPython starts a full collection once
  generation 1 has been collected ``threshold2`` times and what was promoted since the last full
  collection reaches a quarter of what that one left: with 200 streams that happened ~1 s after
  they connected, and the collection took ~50 ms (12-70 ms seen) to scan them. With
  ``FULL_EVERY`` = 100 a full collection also waits for 100 generation-1 collections, about two
  minutes at 10 batches/s. Cyclic garbage that reaches the oldest generation is freed later,
  which costs a little memory, never correctness (reference counting frees the rest).

The young generations keep CPython's defaults: their collections scan at most a few thousand
objects (~0.1-1 ms), and a larger first threshold would trade many short pauses for fewer long
ones.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 700  # CPython's default: allocations minus frees before a generation-0 pass
MIDDLE_EVERY = 10  # CPython's default: generation-0 passes per generation-1 pass
FULL_EVERY = 100  # generation-1 passes per full pass (CPython's default is 10)


def apply_server_gc_policy() -> None:
    """Freeze what is alive now out of the collector's reach and make full collections rare.

    Call once, after the app is built and before serving (in each worker process).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_EVERY, FULL_EVERY)
