"""Tables for pandas, or plain dicts of columns where pandas is not installed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trickscope.client._series import Columns

if TYPE_CHECKING:
    from trickscope.client._records import RunRecord

WALL_TIME_SUFFIX = ":wall_time"


def want_frame(as_frame: bool | None) -> bool:
    """Whether to build a DataFrame: ``None`` means "when pandas is installed"."""
    if as_frame is False:
        return False
    try:
        import pandas  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        if as_frame:
            raise ImportError(
                "as_frame=True needs pandas: pip install pandas (or pass as_frame=False for a "
                "dict of columns)"
            ) from None
        return False
    return True


def history_table(series: Mapping[str, Columns], *, wall_time: bool, as_frame: bool) -> Any:
    """One row per step that any series has, one column per series (and its wall time).

    A step a series did not log is NaN in a DataFrame and None in the dict form, so it is never
    mistaken for a logged NaN there.
    """
    if as_frame:
        import pandas as pd

        parts = {}
        for name, cols in series.items():
            index = pd.Index(cols.step, dtype="int64", name="step")
            parts[name] = pd.Series(cols.value, index=index, dtype="float64")
            if wall_time:
                parts[name + WALL_TIME_SUFFIX] = pd.Series(
                    cols.wall_time, index=index, dtype="float64"
                )
        if not parts:
            return pd.DataFrame(index=pd.Index([], dtype="int64", name="step"))
        frame = pd.concat(parts, axis=1, sort=True)
        frame.index.name = "step"
        return frame
    steps = sorted(set().union(*(_plain(c.step) for c in series.values())))
    table: dict[str, list[Any]] = {"step": steps}
    for name, cols in series.items():
        table[name] = _aligned(steps, cols.step, cols.value)
        if wall_time:
            table[name + WALL_TIME_SUFFIX] = _aligned(
                steps, cols.step, cols.wall_time if cols.wall_time is not None else []
            )
    return table


def _plain(values: Sequence[Any]) -> list[Any]:
    """A list from a list or a numpy array (plain Python numbers either way)."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _aligned(steps: list[int], own: Sequence[int], values: Sequence[float]) -> list[Any]:
    by_step = dict(zip(_plain(own), _plain(values), strict=True))
    return [by_step.get(step) for step in steps]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value


def run_row(record: RunRecord) -> dict[str, Any]:
    """One run as a flat row: its fields, ``config.<dotted.key>`` and ``latest.<series>``."""
    row: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "project": record.project,
        "status": record.status,
        "tags": list(record.tags),
        "created_at": record.created_at,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "duration_s": record.duration,
        "last_step": record.last_step,
    }
    for key, value in record.config.items():
        _flatten(f"config.{key}", value, row)
    for name, value in record.latest.items():
        row[f"latest.{name}"] = math.nan if value is None else value
    return row


def runs_table(records: Iterable[RunRecord], *, as_frame: bool) -> Any:
    """One row per run (see :func:`run_row`); columns are the union over the runs."""
    rows = [run_row(r) for r in records]
    if as_frame:
        import pandas as pd

        frame = pd.DataFrame(rows)
        return frame.set_index("id") if rows else frame
    return rows
