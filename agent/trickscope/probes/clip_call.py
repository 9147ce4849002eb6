"""The threshold of a training loop's ``torch.nn.utils.clip_grad_norm_`` call, and whether that
call compared the loss-scaled norm with it.

The clip sentinels (:mod:`trickscope.probes.sentinel`) measure what clipping did to the
gradients, not the ``max_norm`` it was given: a clip that never acts leaves no trace at all, and
one made before ``GradScaler.unscale_`` looks like a threshold set far too low. The call's
``max_norm`` is found in the source of the calling frames (read once per code object, at setup
discovery, never per step): a literal, or a name or attribute chain read from the frame without
running any code (``inspect.getattr_static``). A clip call inside a user helper that a calling
frame calls before the step (its frame is gone by then) is found by following the frame's calls
into the helpers' source, :data:`MAX_HELPER_DEPTH` calls deep: there a parameter stands for the
call's argument expression, read in the caller, and any other name for the helper's closure,
globals or builtins. Given the threshold, the measured clip coefficient says which norm the call
compared with it: ``min(1, max_norm / norm)`` of the unscaled norm, or of the norm times the loss
scale.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import math
import os
import sysconfig
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

MAX_FRAMES = 30
# How deep a frame's calls are followed into user helpers for a clip call: a helper, and the
# helper's own helper.
MAX_HELPER_DEPTH = 2
# A measured coefficient this close (relative) to one prediction and not the other decides.
MATCH = 1e-2
# Frames of these packages hold no user's clip call; their source is never read.
_LIBRARIES = (
    os.path.dirname(torch.__file__ or "") + os.sep,
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
)
# Functions from these, or from any installed package, are no user's helpers: never followed.
_NOT_HELPERS = _LIBRARIES + tuple(
    {os.path.join(sysconfig.get_paths()[key], "") for key in ("stdlib", "platstdlib")}
)
_INSTALLED = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
_CLIPS = {id(torch.nn.utils.clip_grad_norm_), id(torch.nn.utils.clip_grad.clip_grad_norm)}
_EPS = 1e-6  # torch adds it to the norm before dividing

_MISSING = object()
# A name's value in some scope, read without running code; _MISSING where it cannot be.
Lookup = Callable[[str], Any]


@dataclass(frozen=True)
class _Body:
    """What a code object's own body (not its nested functions') holds, read from its source."""

    # Every call in source order, with its max_norm expression where it is named like a clip.
    calls: tuple[tuple[ast.Call, ast.expr | None], ...]
    # Names the body binds: a parameter among them no longer holds its argument.
    rebound: frozenset[str]


@dataclass(frozen=True)
class _Known:
    """An argument known as a value, not as the caller's expression: ``self``, a default."""

    value: Any


# code object -> its body as read (empty where it has no source)
_bodies: dict[types.CodeType, _Body] = {}


def threshold(frame: types.FrameType | None, max_frames: int = MAX_FRAMES) -> float | None:
    """The ``max_norm`` of the first ``clip_grad_norm_`` call in the calling frames' source
    (or in a user helper they call, at the place of that call) that resolves, statically, to
    torch's function and a positive number; else ``None``."""
    frames = 0
    while frame is not None and frames < max_frames:
        code = frame.f_code
        if not code.co_filename.startswith(_LIBRARIES):
            # An installed package's frame (a trainer's, a test runner's) is read for its own
            # clip calls, but its many calls are not followed: a user's helper is called by
            # the user's loop.
            depth = MAX_HELPER_DEPTH if _is_user(code) else 0
            found = _in_body(code, _frame_scope(frame), depth)
            if found is not None:
                return found
        frame = frame.f_back
        frames += 1
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


def _in_body(code: types.CodeType, lookup: Lookup, depth: int) -> float | None:
    """The threshold of the first clip call in ``code``'s body that resolves under ``lookup``,
    a call into a user helper standing for the helper's clip calls (followed ``depth`` deep)."""
    for call, max_norm in _body(code).calls:
        if max_norm is not None and id(_resolve(call.func, lookup)) in _CLIPS:
            found = _positive(_resolve(max_norm, lookup))
        elif depth > 0:
            found = _in_helper(call, lookup, depth)
        else:
            continue
        if found is not None:
            return found
    return None


def _in_helper(call: ast.Call, lookup: Lookup, depth: int) -> float | None:
    """The threshold of a clip call in the user function that ``call`` calls, its parameters
    bound to the call's arguments; ``None`` where the callee is no user function."""
    try:
        callee = _callee(call.func, lookup)
        if callee is None:
            return None
        function, first = callee
        arguments = _bind(function, first, call)
        if arguments is None:
            return None
        scope = _helper_scope(function, arguments, lookup)
        return _in_body(function.__code__, scope, depth - 1)
    except Exception:  # an object static reading cannot take is skipped, never raised to training
        return None


def _callee(expr: ast.expr, lookup: Lookup) -> tuple[types.FunctionType, tuple[Any, ...]] | None:
    """The user function that a call's callee expression names, read statically, and the
    arguments the call passes ahead of its own (a method's ``self`` or ``cls``)."""
    first: tuple[Any, ...] = ()
    if isinstance(expr, ast.Attribute):
        owner = _resolve(expr.value, lookup)
        value = _attribute(owner, expr.attr)
        # getattr_static gives what the class stores: bind it as the attribute access would.
        if type(value) is staticmethod:
            value = value.__func__
        elif type(value) is classmethod:
            value, first = value.__func__, (owner if _is(owner, type) else type(owner),)
        elif (
            type(value) is types.FunctionType
            and not _is(owner, (type, types.ModuleType))
            and not _in_instance_dict(owner, expr.attr, value)
        ):
            first = (owner,)
    else:
        value = _resolve(expr, lookup)
    if type(value) is types.MethodType:  # a bound method held in a variable
        value, first = value.__func__, (value.__self__,)
    if type(value) is not types.FunctionType or not _is_user(value.__code__):
        return None
    return value, first


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance`` by the true type: ``isinstance`` may read a user ``__class__`` property."""
    return issubclass(type(value), kind)


def _in_instance_dict(owner: Any, name: str, value: Any) -> bool:
    """Whether ``value`` is ``owner``'s own attribute (a function stored there is not bound)."""
    try:  # as inspect.getattr_static reads it
        namespace = object.__getattribute__(owner, "__dict__")
    except AttributeError:
        return False
    return type(namespace) is dict and dict.get(namespace, name, _MISSING) is value


def _is_user(code: types.CodeType) -> bool:
    filename = code.co_filename
    return not filename.startswith(_NOT_HELPERS) and not any(d in filename for d in _INSTALLED)


def _bind(
    function: types.FunctionType, first: tuple[Any, ...], call: ast.Call
) -> dict[str, Any] | None:
    """Each parameter's argument in ``call``: the caller's expression, or a :class:`_Known`
    value (``first``, a default); ``None`` where the call does not fit the signature."""
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(
        keyword.arg is None for keyword in call.keywords
    ):
        return {}  # *args or **kwargs: which parameter gets what is not in the source
    signature = _signature(function)
    try:
        bound = signature.bind_partial(
            *(_Known(value) for value in first),
            *call.args,
            **{keyword.arg: keyword.value for keyword in call.keywords if keyword.arg},
        )
    except TypeError:
        return None  # the call raises: no clip in it ran
    arguments: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in bound.arguments:
            arguments[name] = bound.arguments[name]
        elif parameter.default is not parameter.empty:
            arguments[name] = _Known(parameter.default)
    return arguments


def _signature(function: types.FunctionType) -> inspect.Signature:
    """``function``'s parameters from its code object and defaults alone: ``inspect.signature``
    reads ``__signature__`` and ``__wrapped__``, and annotations (lazily evaluated from Python
    3.14), none of which describe this code object's parameters for sure."""
    code = function.__code__
    names, positional, keyword_only = code.co_varnames, code.co_argcount, code.co_kwonlyargcount
    defaults = function.__defaults__ or ()
    keyword_defaults = function.__kwdefaults__ or {}
    empty = inspect.Parameter.empty
    parameters = []
    for index, name in enumerate(names[:positional]):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if index < code.co_posonlyargcount
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        at = index - (positional - len(defaults))
        parameters.append(inspect.Parameter(name, kind, default=defaults[at] if at >= 0 else empty))
    end = positional + keyword_only
    varargs = bool(code.co_flags & inspect.CO_VARARGS)
    if varargs:
        parameters.append(inspect.Parameter(names[end], inspect.Parameter.VAR_POSITIONAL))
    for name in names[positional:end]:
        default = keyword_defaults.get(name, empty)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
    if code.co_flags & inspect.CO_VARKEYWORDS:
        parameters.append(inspect.Parameter(names[end + varargs], inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(parameters)


def _frame_scope(frame: types.FrameType) -> Lookup:
    """Names as ``frame`` sees them now: its locals, globals, builtins."""
    scopes = (frame.f_locals, frame.f_globals, frame.f_builtins)

    def lookup(name: str) -> Any:
        for scope in scopes:
            if name in scope:
                return scope[name]
        return _MISSING

    return lookup


def _helper_scope(
    function: types.FunctionType, arguments: dict[str, Any], caller: Lookup
) -> Lookup:
    """Names in ``function``'s body as they stand when it is entered: a parameter is its
    argument (the caller's expression read under ``caller``), a free variable its closure cell,
    another local unknown, and any other name the function's globals or builtins."""
    code = function.__code__
    rebound = _body(code).rebound
    local = frozenset(code.co_varnames + code.co_cellvars)
    cells = dict(zip(code.co_freevars, function.__closure__ or (), strict=True))
    namespace = function.__globals__
    builtin = namespace.get("__builtins__", builtins)
    if type(builtin) is types.ModuleType:  # outside __main__, __builtins__ may be the module
        builtin = builtin.__dict__
    elif type(builtin) is not dict:
        builtin = builtins.__dict__

    def lookup(name: str) -> Any:
        if name in arguments and name not in rebound:
            argument = arguments[name]
            return argument.value if type(argument) is _Known else _resolve(argument, caller)
        if name in local:
            return _MISSING  # bound only as the body runs
        if name in cells:
            try:
                return cells[name].cell_contents
            except ValueError:  # an empty cell
                return _MISSING
        for scope in (namespace, builtin):
            if name in scope:
                return scope[name]
        return _MISSING

    return lookup


def _body(code: types.CodeType) -> _Body:
    """``code``'s calls and bound names, read from its source once; cached."""
    body = _bodies.get(code)
    if body is None:
        body = _bodies[code] = _read(code)
    return body


def _read(code: types.CodeType) -> _Body:
    tree = _tree(code)
    if tree is None:
        return _Body((), frozenset())
    calls: list[tuple[ast.Call, ast.expr | None]] = []
    rebound: set[str] = set()
    for node in _own_nodes(tree):
        if isinstance(node, ast.Call):
            calls.append((node, _max_norm(node)))
        rebound.update(_binds(node))
    # In source order: the loop's first clip call (or call into a helper that clips) counts.
    calls.sort(key=lambda call: (call[0].lineno, call[0].col_offset))
    return _Body(tuple(calls), frozenset(rebound))


def _tree(code: types.CodeType) -> ast.AST | None:
    try:
        if code.co_name == "<module>":  # getsource would give the file's first block only
            return ast.parse("".join(inspect.findsource(code)[0]))
        parsed = ast.parse(textwrap.dedent(inspect.getsource(code)))
    except Exception:  # no source (a REPL, exec'd text), or one edited since: nothing to read
        return None
    if code.co_name == "<lambda>":  # getsource gives its whole statement: the lambda if alone
        lambdas = [node for node in ast.walk(parsed) if isinstance(node, ast.Lambda)]
        return lambdas[0] if len(lambdas) == 1 else None
    return parsed.body[0] if parsed.body else parsed


def _max_norm(call: ast.Call) -> ast.expr | None:
    """The ``max_norm`` argument of a call whose callee is a name or attribute chain ending in
    ``clip_grad_norm_`` or ``clip_grad_norm``; ``None`` for any other call."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else None
    if isinstance(call.func, ast.Name):
        name = call.func.id
    if name not in ("clip_grad_norm_", "clip_grad_norm"):
        return None
    max_norm = call.args[1] if len(call.args) > 1 else None
    for keyword in call.keywords:
        if keyword.arg == "max_norm":
            max_norm = keyword.value
    return max_norm


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _own_nodes(root: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``root``'s own body: a nested function or class is yielded (its name is
    bound here) but not entered (its body is other frames' code), nor are ``root``'s own
    decorators and defaults (its caller's)."""
    if isinstance(root, (ast.FunctionDef, ast.AsyncFunctionDef)):
        stack: list[ast.AST] = list(root.body)
    elif isinstance(root, ast.Lambda):
        stack = [root.body]
    else:
        stack = list(ast.iter_child_nodes(root))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))


def _binds(node: ast.AST) -> tuple[str, ...]:
    """The names ``node`` binds in its scope."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return (node.id,)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return (node.name,)
    if isinstance(node, ast.alias):
        return ((node.asname or node.name).split(".")[0],)
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
        return (node.name,)
    if isinstance(node, ast.MatchMapping) and node.rest:
        return (node.rest,)
    return ()


def _resolve(expr: ast.expr, lookup: Lookup) -> Any:
    """A literal, or a name or attribute chain read under ``lookup`` without running code (no
    properties, no ``__getattr__``); ``_MISSING`` for anything else."""
    if isinstance(expr, ast.Constant):
        return expr.value
    if isinstance(expr, ast.Name):
        return lookup(expr.id)
    if isinstance(expr, ast.Attribute):
        return _attribute(_resolve(expr.value, lookup), expr.attr)
    return _MISSING


def _attribute(owner: Any, name: str) -> Any:
    if owner is _MISSING:
        return _MISSING
    try:
        return inspect.getattr_static(owner, name)
    except AttributeError:
        return _MISSING


def _positive(value: Any) -> float | None:
    """``value`` as a threshold: a finite positive number (not a bool); else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf:
        return float(value)
    return None
