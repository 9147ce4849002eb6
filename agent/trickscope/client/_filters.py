"""Run-listing filters and sort keys, mapped exactly onto ``GET /api/v1/runs`` parameters.

The REST API filters with repeated ``config=<dotted.key>:<value>``, ``metric=<name><op><number>``
and ``tag=<tag>`` parameters. The client accepts those strings as they appear in a query string,
a dict keyed ``config.<dotted.key>`` / ``metric.<name>``, or both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Filters = Mapping[str, Any] | Iterable[str] | None

_OP = re.compile(r"^\s*(<=|>=|<|>|=)\s*(.+?)\s*$")
_REST_PARAMS = ("config", "metric", "tag")


@dataclass
class RunQuery:
    """The repeated query parameters of a run listing."""

    config: list[str] = field(default_factory=list)
    metric: list[str] = field(default_factory=list)
    tag: list[str] = field(default_factory=list)


def config_value(key: str, value: Any) -> str:
    """``value`` as the server reads a config filter's value: a JSON scalar, else the text.

    A string that the server would read as another JSON scalar (``"0.1"``, ``"true"``) is sent
    quoted, so it still matches the string.
    """
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return value if isinstance(parsed, dict | list) else json.dumps(value)
    if value is None or isinstance(value, bool | int):
        return json.dumps(value)
    if isinstance(value, float) and math.isfinite(value):
        return json.dumps(value)
    raise ValueError(
        f"config filter {key!r} has value {value!r}: only a string, number, bool or None can be "
        "matched (the REST API compares config values as JSON scalars)"
    )


def metric_conditions(name: str, value: Any) -> list[str]:
    """REST ``metric`` filters of one metric: a number means ``=``; ``"<0.1"``, ``">=2"``, a
    ``(op, number)`` pair, or a list of those (all must hold)."""
    if isinstance(value, list):
        return [item for v in value for item in metric_conditions(name, v)]
    op, number = "=", value
    if isinstance(value, tuple) and len(value) == 2:
        op, number = value
    elif isinstance(value, str):
        match = _OP.match(value)
        if match is None:
            raise ValueError(
                f"metric filter {name!r}: {value!r} must be <op><number> with op one of "
                "<, <=, >, >=, = (e.g. '<0.1')"
            )
        op, number = match.group(1), match.group(2)
    if op not in ("<", "<=", ">", ">=", "="):
        raise ValueError(f"metric filter {name!r}: operator {op!r} is not <, <=, >, >= or =")
    try:
        as_float = float(number)
    except (TypeError, ValueError):
        raise ValueError(f"metric filter {name!r}: {number!r} is not a number") from None
    if isinstance(number, bool) or math.isnan(as_float):
        raise ValueError(f"metric filter {name!r}: {number!r} is not a number")
    return [f"{name}{op}{number if isinstance(number, str) else repr(as_float)}"]


def build_query(filters: Filters, tags: Iterable[str] | None = None) -> RunQuery:
    """The REST parameters of ``filters`` and ``tags``.

    Raises:
        ValueError: a filter the REST API could not express; the message names it.
    """
    query = RunQuery(tag=list(_strings("tags", tags)))
    if filters is None:
        return query
    if isinstance(filters, str):
        filters = [filters]
    if isinstance(filters, Mapping):
        for key, value in filters.items():
            kind, dot, name = str(key).partition(".")
            if kind == "config" and dot and name:
                query.config.append(f"{name}:{config_value(key, value)}")
            elif kind == "metric" and dot and name:
                query.metric.extend(metric_conditions(name, value))
            else:
                raise ValueError(
                    f"filter key {key!r} must be config.<dotted.key> or metric.<name>, e.g. "
                    "{'config.optimizer.lr': 0.1, 'metric.loss/train': '<0.5'}"
                )
        return query
    for item in _strings("filters", filters):
        param, sep, value = item.partition("=")
        if not sep or param not in _REST_PARAMS or not value:
            raise ValueError(
                f"filter {item!r} must be a REST filter: config=<dotted.key>:<value>, "
                "metric=<name><op><number> or tag=<tag>, e.g. 'metric=loss/train<0.5'"
            )
        getattr(query, param).append(value)
    return query


def _strings(what: str, items: Iterable[str] | None) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str):
        return [items]
    out = list(items)
    for item in out:
        if not isinstance(item, str):
            raise TypeError(f"{what} must be strings, got {item!r}")
    return out


def rest_sort(sort: str | None) -> str | None:
    """A sort key as the REST API spells it: ``config.lr`` becomes ``config:lr`` and
    ``metric.loss/train`` becomes ``metric:loss/train`` (the filter keys' spelling works too)."""
    if sort is None:
        return None
    sign, key = ("-", sort[1:]) if sort.startswith("-") else ("", sort)
    for kind in ("config", "metric"):
        if key.startswith(kind + "."):
            return f"{sign}{kind}:{key[len(kind) + 1 :]}"
    return sort
