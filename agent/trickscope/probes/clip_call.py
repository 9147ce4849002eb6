"""The threshold of a training loop's ``torch.nn.utils.clip_grad_norm_`` call, and whether that
call compared the loss-scaled norm with it.

The clip sentinels (:mod:`trickscope.probes.sentinel`) measure what clipping did to the
gradients, not the ``max_norm`` it was given: a clip that never acts leaves no trace at all, and
one made before ``GradScaler.unscale_`` looks like a threshold set far too low. The call's
``max_norm`` is found in the source of the calling frames (read once per code object, at setup
discovery, never per step): a literal, or a name or attribute chain read from the frame without
running any code (``inspect.getattr_static``). Given the threshold, the measured clip coefficient
says which norm the call compared with it: ``min(1, max_norm / norm)`` of the unscaled norm, or
of the norm times the loss scale.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import textwrap
import types
from collections.abc import Iterator
from typing import Any

import torch

MAX_FRAMES = 30
# A measured coefficient this close (relative) to one prediction and not the other decides.
MATCH = 1e-2
# Frames of these packages hold no user's clip call; their source is never read.
_LIBRARIES = (
    os.path.dirname(torch.__file__ or "") + os.sep,
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
)
_CLIPS = {id(torch.nn.utils.clip_grad_norm_), id(torch.nn.utils.clip_grad.clip_grad_norm)}
_EPS = 1e-6  # torch adds it to the norm before dividing

# code object -> the max_norm expressions of its clip calls (an empty list: none)
_calls: dict[types.CodeType, list[tuple[ast.expr, ast.expr]]] = {}


def threshold(frame: types.FrameType | None, max_frames: int = MAX_FRAMES) -> float | None:
    """The ``max_norm`` of the first ``clip_grad_norm_`` call in the calling frames' source
    that resolves, in its frame, to torch's function and a positive number; else ``None``."""
    depth = 0
    while frame is not None and depth < max_frames:
        code = frame.f_code
        if not code.co_filename.startswith(_LIBRARIES):
            for callee, max_norm in _clip_calls(code):
                if id(_resolve(callee, frame)) in _CLIPS:
                    value = _resolve(max_norm, frame)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        if 0 < value < math.inf:
                            return float(value)
        frame = frame.f_back
        depth += 1
    return None


def before_unscale(
    preclip: float, coefficient: float, max_norm: float, scale: float
) -> float | None:
    """1.0 when the measured clip ``coefficient`` is the one ``max_norm`` gives against the
    pre-clip norm times the loss ``scale`` (clipped before ``unscale_``), 0.0 when it is the one
    against the unscaled ``preclip`` norm, ``None`` when both predict the same (neither clips)
    or neither matches."""
    if not (scale > 1 and preclip > 0 and math.isfinite(preclip) and coefficient > 0):
        return None
    unscaled = min(1.0, max_norm / (preclip + _EPS))
    scaled = min(1.0, max_norm / (preclip * scale + _EPS))
    if _close(unscaled, scaled):
        return None
    if _close(coefficient, scaled):
        return 1.0
    if _close(coefficient, unscaled):
        return 0.0
    return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= MATCH * max(abs(a), abs(b))


def _clip_calls(code: types.CodeType) -> list[tuple[ast.expr, ast.expr]]:
    """(callee, max_norm) expressions of the calls in ``code``'s own body whose callee is a
    name or attribute chain ending in ``clip_grad_norm_`` or ``clip_grad_norm``; cached."""
    found = _calls.get(code)
    if found is None:  # in source order: the loop's first clip call is the one that counts
        calls = sorted(_parse(code), key=lambda c: (c[0].lineno, c[0].col_offset))
        found = _calls[code] = calls
    return found


def _parse(code: types.CodeType) -> Iterator[tuple[ast.expr, ast.expr]]:
    try:
        if code.co_name == "<module>":  # getsource would give the file's first block only
            tree: ast.AST = ast.parse("".join(inspect.findsource(code)[0]))
        else:
            parsed = ast.parse(textwrap.dedent(inspect.getsource(code)))
            tree = parsed.body[0] if parsed.body else parsed
    except (OSError, TypeError, SyntaxError, ValueError):  # no source: a REPL, exec'd text
        return
    for node in _own_nodes(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if isinstance(node.func, ast.Name):
            name = node.func.id
        if name not in ("clip_grad_norm_", "clip_grad_norm"):
            continue
        max_norm = node.args[1] if len(node.args) > 1 else None
        for keyword in node.keywords:
            if keyword.arg == "max_norm":
                max_norm = keyword.value
        if max_norm is not None:
            yield node.func, max_norm


def _own_nodes(root: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``root`` outside nested functions and classes (other frames' code)."""
    stack = list(ast.iter_child_nodes(root))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


_MISSING = object()


def _resolve(expr: ast.expr, frame: types.FrameType) -> Any:
    """A literal, or a name or attribute chain read in ``frame`` without running code (no
    properties, no ``__getattr__``); ``_MISSING`` for anything else."""
    if isinstance(expr, ast.Constant):
        return expr.value
    if isinstance(expr, ast.Name):
        for scope in (frame.f_locals, frame.f_globals, frame.f_builtins):
            if expr.id in scope:
                return scope[expr.id]
        return _MISSING
    if isinstance(expr, ast.Attribute):
        owner = _resolve(expr.value, frame)
        if owner is _MISSING:
            return _MISSING
        try:
            return inspect.getattr_static(owner, expr.attr)
        except AttributeError:
            return _MISSING
    return _MISSING
