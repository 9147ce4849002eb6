"""Progress bars of the long commands (sync, export, report, import), on stderr.

A bar is drawn only when stderr is a terminal, so pipes, logs and CI keep clean output; the
commands' own results go to stdout either way.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(
    total: int | float | None = None,
    desc: str = "",
    unit: str = "it",
    unit_scale: bool = False,
    leave: bool = False,
) -> tqdm:
    """A tqdm bar on stderr, disabled when stderr is not a terminal; use it as a context manager.

    Args:
        total: The amount of work, in ``unit``s; None for an open-ended count.
        desc: What is being done, shown left of the bar (e.g. ``"export 3f2a…"``).
        unit: The unit counted (``"B"`` with ``unit_scale=True`` for bytes).
        unit_scale: Scale the counts with SI prefixes (k, M, G).
        leave: Keep the finished bar on screen.
    """
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        leave=leave,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
