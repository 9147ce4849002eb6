from __future__ import annotations

import trickscope.tricks as tricks
from trickscope.tricks import MetricSink


def test_all_is_sorted_and_every_name_exists() -> None:
    assert tricks.__all__ == sorted(tricks.__all__)
    for name in tricks.__all__:
        assert hasattr(tricks, name), name


def test_recording_sink_satisfies_the_metric_sink_protocol(sink) -> None:
    assert isinstance(sink, MetricSink)


def test_tricks_import_nothing_else_from_trickscope() -> None:
    # Besides their own package, the tricks may use the one module that calls private foreach
    # ops (STYLE.md §4), ``from trickscope import _foreach``, the shared argument checks and
    # the unwrapping of DDP/compile wrappers (leaf modules: torch and the standard library).
    import ast
    from pathlib import Path

    root = Path(tricks.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
                if module == "trickscope" and [a.name for a in node.names] == ["_foreach"]:
                    continue
                if module in ("trickscope._checks", "trickscope._modules"):
                    continue
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            if module.startswith("trickscope"):
                assert module.startswith("trickscope.tricks"), (path.name, module)
