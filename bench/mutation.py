"""Mutation testing of the server's judgement code: does a test fail when the product is wrong?

    python bench/mutation.py [--files downsample health ingest] [--sample 40] [--budget 1500]
                             [--jobs 1] [--tests-from-worktree] [--survivors]

Each mutant changes one operator or constant of one file (``<`` to ``<=``, ``and`` to ``or``,
``not x`` to ``x``, ``+`` to ``-``, ``&`` to ``|``, a number to another, ``True`` to ``False``)
and runs the fast tests of that file against it; a mutant that leaves them green survived. The
code is a snapshot of the committed tree (``git archive HEAD``) in a temporary directory, never
the working tree. One parent imports pytest, numpy, SQLAlchemy and FastAPI once; each mutant runs
in a child forked from it that compiles the mutated module from its syntax tree in place of the
file and calls ``pytest.main``, so a mutant costs its tests' run time, not an interpreter start.

``--sample`` draws that many mutants per file (seeded, reproducible), ``--budget`` stops starting
new ones after that many seconds; a mutant whose tests run past ``--timeout-factor`` times the
unmutated run is counted as a timeout. Prints one row per file: mutants, killed, survived,
timeouts, survival rate (survived / mutants), and with ``--survivors`` each survivor's line.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.abc
import importlib.util
import io
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # forked children must not inherit idle BLAS pools

ROOT = Path(__file__).resolve().parent.parent
SERVER = "server/trickscope_server"
# The fast tests that judge each target (PostgreSQL and slow tests left out: SQLite shows the
# same logic, and a mutant run must stay seconds long).
_HEALTH = ROOT / SERVER / "services/health"
_RULE_MODULES = sorted(
    f"{SERVER}/services/health/{p.name}"
    for p in _HEALTH.glob("*.py")
    if p.name not in ("__init__.py", "view.py")
)
_BAND = "tests/unit/server/test_update_ratio_band.py::"
# Per target, groups of (files to mutate, the tests that judge them): the rules are pure
# functions of a run view and their tests need no server; only the stored view needs the API's.
TARGETS: dict[str, list[tuple[list[str], list[str]]]] = {
    "downsample": [
        (
            [f"{SERVER}/downsample.py"],
            [
                "tests/unit/server/test_server_downsample.py",
                "tests/unit/server/test_server_points.py::test_a_step_logged_again_reads_back"
                "_once_with_the_later_value",
            ],
        )
    ],
    "health": [
        (
            _RULE_MODULES,
            [
                "tests/unit/server/test_health_pairs.py",
                "tests/unit/server/test_health_edges.py",
                "tests/unit/server/test_health_evidence.py",
                "tests/unit/server/test_health_gradients.py",
                "tests/unit/server/test_health_training.py",
                "tests/unit/server/test_health_tricks.py",
                f"{_BAND}test_the_band_is_the_one_the_documents_justify",
                f"{_BAND}test_the_rule_fires_exactly_outside_the_band",
            ],
        ),
        ([f"{SERVER}/services/health/view.py"], ["tests/unit/server/test_health_api.py"]),
    ],
    "ingest": [
        (
            [
                f"{SERVER}/services/ingest.py",
                f"{SERVER}/services/ingest_blocks.py",
                f"{SERVER}/services/ingest_histograms.py",
            ],
            [
                "tests/unit/server/test_server_points.py",
                "tests/unit/server/test_stat_blocks.py",
                "tests/unit/server/test_server_histograms_compare_export.py",
                "tests/unit/server/test_server_errors.py",
                "tests/unit/server/test_edge_validation.py",
                "tests/unit/server/test_wide_stat_batches.py",
                "tests/unit/server/test_ingest_limits.py",
            ],
        )
    ],
}
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not postgres and not slow"]

_COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip
_BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
    ast.Mod: ast.Mult,
}  # fmt: skip
_SYMBOL = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+",
    ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**", ast.BitAnd: "&",
    ast.BitOr: "|", ast.Mod: "%", ast.And: "and", ast.Or: "or",
}  # fmt: skip


@dataclass(frozen=True)
class Mutant:
    """One change: the ``slot``-th operator or constant at ``index`` in ``ast.walk`` order."""

    path: str
    index: int
    slot: int
    line: int
    what: str
    source: str  # the line as committed


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """Nodes whose mutants cannot change behaviour: annotations (never evaluated under
    ``from __future__ import annotations``), f-strings (message text) and docstrings."""
    skip: set[int] = set()
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots += [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
            roots += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            roots.append(node)
    for root in roots:
        skip.update(id(n) for n in ast.walk(root))
    return skip


def _changes(node: ast.AST) -> list[str]:
    """What each mutant of ``node`` does, one entry per slot."""
    if isinstance(node, ast.Compare):
        return [
            f"{_SYMBOL[type(op)]} -> {_SYMBOL[_COMPARE_SWAP[type(op)]]}"
            for op in node.ops
            if type(op) in _COMPARE_SWAP
        ]
    if isinstance(node, ast.BoolOp):
        return [f"{_SYMBOL[type(node.op)]} -> {'or' if isinstance(node.op, ast.And) else 'and'}"]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ["not x -> x"]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
        return [f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[_BINOP_SWAP[type(node.op)]]}"]
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return [f"{node.value} -> {not node.value}"]
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return [f"{node.value!r} -> {_other_number(node.value)!r}"]
    return []


def _other_number(value: float) -> float:
    if isinstance(value, int):
        return value + 1
    return 1.0 if value == 0 else value * 2


def _mutate(node: ast.AST, slot: int) -> None:
    """Apply slot ``slot`` of :func:`_changes` to ``node`` in place."""
    if isinstance(node, ast.Compare):
        positions = [i for i, op in enumerate(node.ops) if type(op) in _COMPARE_SWAP]
        i = positions[slot]
        node.ops[i] = _COMPARE_SWAP[type(node.ops[i])]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.BinOp):
        node.op = _BINOP_SWAP[type(node.op)]()
    elif isinstance(node, ast.Constant):
        is_bool = isinstance(node.value, bool)
        node.value = (not node.value) if is_bool else _other_number(node.value)


class _NotWrapped(ast.NodeTransformer):
    """Replaces the ``not`` node with index ``target`` by its operand."""

    def __init__(self, target: ast.AST) -> None:
        self.target = target

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:  # noqa: N802 - ast's visitor name
        self.generic_visit(node)
        return node.operand if node is self.target else node


def mutants_of(path: str, root: Path) -> list[Mutant]:
    """Every mutant of one file, in a stable order."""
    tree = ast.parse((root / path).read_text())
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    skip = _skipped_nodes(tree) | docstrings
    lines = (root / path).read_text().splitlines()
    found = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        for slot, what in enumerate(_changes(node)):
            line = getattr(node, "lineno", 1)
            found.append(Mutant(path, index, slot, line, what, lines[line - 1].strip()))
    return found


def mutated_code(mutant: Mutant, root: Path) -> object:
    """The mutant's module, compiled under the original file name."""
    file = root / mutant.path
    tree = ast.parse(file.read_text())
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == mutant.index)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        tree = _NotWrapped(node).visit(tree)
    else:
        _mutate(node, mutant.slot)
    return compile(ast.fix_missing_locations(tree), str(file), "exec")


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves one module from mutated code instead of its file."""

    def __init__(self, name: str, code: object, origin: str) -> None:
        self.name, self.code, self.origin = name, code, origin

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.origin)

    def create_module(self, spec: object) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = self.origin
        exec(self.code, module.__dict__)  # noqa: S102 - the mutant under test


def _module_name(path: str) -> str:
    return path.removeprefix("server/").removesuffix(".py").replace("/", ".")


def _start(mutant: Mutant | None, root: Path, tests: list[str], log: Path) -> int:
    """Fork a child running ``tests`` (against ``mutant``, or the code as it is); its pid."""
    pid = os.fork()
    if pid:
        return pid
    os.setpgid(0, 0)
    rc = 3
    try:
        with log.open("w") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            if mutant is not None:
                code = mutated_code(mutant, root)
                finder = _MutantFinder(_module_name(mutant.path), code, str(root / mutant.path))
                sys.meta_path.insert(0, finder)
            import pytest

            rc = int(pytest.main([*PYTEST_ARGS, *tests]))
    finally:
        os._exit(rc)


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None after killing it at ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@contextlib.contextmanager
def snapshot(tests_from_worktree: bool) -> Iterator[Path]:
    """The committed tree in a temporary directory (with the working tree's tests/ if asked)."""
    with tempfile.TemporaryDirectory(prefix="trickscope-mutation-") as tmp:
        archive = subprocess.run(
            ["git", "archive", "HEAD", "server", "agent", "tests", "pyproject.toml", "web"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp)
        if tests_from_worktree:
            subprocess.run(["cp", "-r", str(ROOT / "tests"), str(root)], check=True)
        yield root


def _preload(root: Path) -> None:
    """Import what every child needs once, before the first fork (never the code under test)."""
    sys.path[:0] = [str(root / "server"), str(root / "agent"), str(root)]
    os.chdir(root)
    import fastapi.testclient  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import sqlalchemy  # noqa: F401
    import tsdownsample  # noqa: F401

    assert not any(name.startswith("trickscope_server") for name in sys.modules)


@dataclass
class Tally:
    """One file's results."""

    mutants: int = 0
    killed: int = 0
    survived: int = 0
    timeout: int = 0


def _plan_group(
    name: str,
    paths: list[str],
    tests: list[str],
    root: Path,
    logs: Path,
    args: argparse.Namespace,
) -> list[tuple[Mutant, list[str], float]]:
    """Check that ``tests`` pass unmutated, time them, and draw the mutants of ``paths``."""
    tests = [t for t in tests if (root / t.partition("::")[0]).exists()]  # at older commits
    started = time.monotonic()
    baseline = _wait(_start(None, root, tests, logs / f"{name}.log"), 600)
    seconds = time.monotonic() - started
    if baseline != 0:
        sys.exit(f"{name}: the unmutated tests fail:\n{(logs / f'{name}.log').read_text()}")
    print(f"{name}: unmutated tests pass in {seconds:.1f} s", flush=True)
    rng = random.Random(args.seed)
    plan = []
    for path in paths:
        found = mutants_of(path, root)
        chosen = rng.sample(found, min(args.sample, len(found))) if args.sample else found
        timeout = args.timeout_factor * seconds + 5
        plan += [(m, tests, timeout) for m in sorted(chosen, key=lambda m: m.index)]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS))
    parser.add_argument("--sample", type=int, default=0, help="mutants per file (0: all)")
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds to start mutants")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--timeout-factor", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tests-from-worktree", action="store_true")
    parser.add_argument("--survivors", action="store_true", help="list each survivor")
    args = parser.parse_args()
    os.nice(10)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleans up like Ctrl-C
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with snapshot(args.tests_from_worktree) as root:
        _preload(root)
        logs = root / "mutation-logs"
        logs.mkdir()
        plan: list[tuple[Mutant, list[str], float]] = []
        for target in args.files:
            for number, (paths, tests) in enumerate(TARGETS[target]):
                plan += _plan_group(f"{target}-{number}", paths, tests, root, logs, args)
        tallies: dict[str, Tally] = {}
        survivors: list[Mutant] = []
        running: dict[int, tuple[Mutant, float, float]] = {}
        try:
            _run(plan, args, root, logs, running, tallies, survivors)
        except (KeyboardInterrupt, SystemExit):
            print("interrupted: the table holds the mutants that finished", flush=True)
        finally:
            for pid in running:  # no child outlives the snapshot
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
    _report(tallies, survivors, commit, args)


def _run(
    plan: list[tuple[Mutant, list[str], float]],
    args: argparse.Namespace,
    root: Path,
    logs: Path,
    running: dict[int, tuple[Mutant, float, float]],
    tallies: dict[str, Tally],
    survivors: list[Mutant],
) -> None:
    """Run the planned mutants, ``args.jobs`` at a time, until done or out of budget."""
    deadline = time.monotonic() + args.budget
    queue = list(plan)
    while queue or running:
        while queue and len(running) < args.jobs and time.monotonic() < deadline:
            mutant, tests, timeout = queue.pop(0)
            pid = _start(mutant, root, tests, logs / "mutant.log")
            running[pid] = (mutant, time.monotonic(), timeout)
        if time.monotonic() >= deadline:
            queue.clear()
        for pid, (mutant, began, timeout) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            late = not done and time.monotonic() - began > timeout
            if not done and not late:
                continue
            code = os.waitstatus_to_exitcode(status) if done else _wait(pid, 0)
            del running[pid]
            tally = tallies.setdefault(mutant.path, Tally())
            tally.mutants += 1
            if code is None:
                tally.timeout += 1
                outcome = "timeout"
            elif code == 0:
                tally.survived += 1
                survivors.append(mutant)
                outcome = "survived"
            else:
                tally.killed += 1
                outcome = "killed"
            finished = sum(t.mutants for t in tallies.values())
            where = f"{mutant.path.removeprefix(SERVER + '/')}:{mutant.line}"
            took = time.monotonic() - began
            print(f"[{finished}/{len(plan)}] {outcome:<8} {where} {mutant.what} ({took:.0f} s)",
                  flush=True)  # fmt: skip
        time.sleep(0.02)


def _report(
    tallies: dict[str, Tally], survivors: list[Mutant], commit: str, args: argparse.Namespace
) -> None:
    print(f"\ncommit {commit}, sample {args.sample or 'all'} per file, seed {args.seed}")
    print(f"{'file':<44} {'mutants':>7} {'killed':>6} {'survived':>8} {'timeout':>7} {'rate':>6}")
    total = Tally()
    for path in sorted(tallies):
        t = tallies[path]
        for field in ("mutants", "killed", "survived", "timeout"):
            setattr(total, field, getattr(total, field) + getattr(t, field))
        name = path.removeprefix(f"{SERVER}/")
        rate = f"{100 * t.survived / t.mutants:.0f}%"
        print(f"{name:<44} {t.mutants:>7} {t.killed:>6} {t.survived:>8} {t.timeout:>7} {rate:>6}")
    if total.mutants:
        rate = f"{100 * total.survived / total.mutants:.1f}%"
        row = (total.mutants, total.killed, total.survived, total.timeout)
        print(f"{'total':<44} {row[0]:>7} {row[1]:>6} {row[2]:>8} {row[3]:>7} {rate:>6}")
    if args.survivors:
        print("\nsurvivors:")
        for m in sorted(survivors, key=lambda m: (m.path, m.line)):
            print(f"  {m.path.removeprefix(SERVER + '/')}:{m.line}: {m.what}    {m.source}")


if __name__ == "__main__":
    main()
