"""The client's filters map exactly onto the REST API's ``config``, ``metric`` and ``tag``."""

from __future__ import annotations

import json
import math

import pytest

from trickscope.client._filters import build_query, config_value, rest_sort


def server_reads(text: str) -> object:
    """What the server makes of a config filter's value (services/runs.py ``_json_scalar``)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return text if isinstance(value, dict | list) else value


@pytest.mark.parametrize(
    "value", [0.1, 3, True, False, None, "adamw", "0.1", "true", "null", '"q"', "[1]", "a:b", ""]
)
def test_config_values_reach_the_server_as_themselves(value: object) -> None:
    read = server_reads(config_value("config.k", value))
    assert read == value and type(read) is type(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, [1, 2], {"a": 1}, object()])
def test_config_values_no_filter_can_match_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="config filter 'config.k'"):
        config_value("config.k", value)


def test_a_dict_maps_onto_rest_parameters() -> None:
    query = build_query(
        {
            "config.optimizer.name": "adamw",
            "config.lr": 0.1,
            "metric.loss/train": "<0.5",
            "metric.eval.acc": [">= 0.9", ("<", 1)],
            "metric.step": 10,
        },
        tags=["base"],
    )
    assert query.config == ["optimizer.name:adamw", "lr:0.1"]
    assert query.metric == ["loss/train<0.5", "eval.acc>=0.9", "eval.acc<1.0", "step=10.0"]
    assert query.tag == ["base"]


def test_rest_strings_pass_through_unchanged() -> None:
    query = build_query(["config=optimizer.name:adamw", "metric=loss/train<=0.5", "tag=x"])
    assert query.config == ["optimizer.name:adamw"]
    assert query.metric == ["loss/train<=0.5"]
    assert query.tag == ["x"]
    assert build_query("metric=acc=1").metric == ["acc=1"]  # one string is one filter


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"lr": 0.1}, "must be config.<dotted.key> or metric.<name>"),
        ({"metric.loss": "about 1"}, "must be <op><number>"),
        ({"metric.loss": "<abc"}, "is not a number"),
        ({"metric.loss": math.nan}, "is not a number"),
        ({"metric.loss": ("!=", 1)}, "is not <, <=, >, >= or ="),
        (["lr:0.1"], "must be a REST filter"),
        (["status=running"], "must be a REST filter"),
    ],
)
def test_filters_the_api_cannot_express_are_refused(filters: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_query(filters)  # type: ignore[arg-type]


def test_sort_keys_take_either_spelling() -> None:
    assert rest_sort("config.optimizer.lr") == "config:optimizer.lr"
    assert rest_sort("-metric.loss/train") == "-metric:loss/train"
    assert rest_sort("-metric:loss/train") == "-metric:loss/train"
    assert rest_sort("name") == "name"
    assert rest_sort(None) is None
