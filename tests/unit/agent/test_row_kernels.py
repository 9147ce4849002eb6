"""The fused row kernels: exact in Triton's interpreter, compiled for current NVIDIA GPUs, and
replaced by the torch ops, once and loudly, when they cannot run."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import IN_CI
from tests.stats_reference import assert_grad_block, assert_weight_block, special_tensors
from trickscope import _foreach, row_kernels, stats

ROOT = Path(__file__).resolve().parents[3]

if importlib.util.find_spec("triton") is None:
    if IN_CI:
        pytest.fail("CI=true but Triton is not installed: the kernels must be tested in CI")
    pytest.skip("Triton is not installed", allow_module_level=True)


def test_the_kernels_equal_the_torch_formulation_in_the_interpreter() -> None:
    """``interpreted_kernels.py`` in a child process, where Triton starts in interpreter mode."""
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(Path(__file__).with_name("interpreted_kernels.py")),
        ],
        cwd=ROOT,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert " passed" in child.stdout and "skipped" not in child.stdout, child.stdout


@pytest.mark.parametrize("arch", [80, 90], ids=["ampere", "hopper"])
def test_the_kernels_compile_for_nvidia_gpus_without_one(arch: int) -> None:
    """Triton's full pipeline down to a cubin (Triton ships ptxas), as on an A100 or H100."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from trickscope import _triton_rows as kernels

    pointers = {
        "table_ptr": "*i64",
        "offsets_ptr": "*i64",
        "sizes_ptr": "*i64",
        "tensors": "i32",
        "steps": "i32",
    }
    sources = [
        ASTSource(
            kernels.moment_rows,
            {
                **pointers,
                "out_ptr": "*fp64",
                "COUNTS": "constexpr",
                "COLUMNS": "constexpr",
                "ROW": "constexpr",
                "DTYPE": "constexpr",
            },
            {"COUNTS": counts, "COLUMNS": columns, "ROW": 1024, "DTYPE": dtype},
        )
        for counts, columns in ((True, len(row_kernels.MOMENT_COLUMNS)), (False, 3))
        for dtype in kernels.DTYPES.values()
    ]
    sources += [
        ASTSource(
            kernels.update_rows,
            {
                "before_ptr": "*fp32",
                **pointers,
                "out_ptr": "*fp64",
                "ROW": "constexpr",
                "DTYPE": "constexpr",
            },
            {"ROW": 1024, "DTYPE": dtype},
        )
        for dtype in kernels.DTYPES.values()
    ]
    merge = {
        "rows_ptr": "*fp64",
        "offsets_ptr": "*i64",
        "sizes_ptr": "*i64",
        "out_ptr": "*fp32",
        "tensors": "i32",
        "COUNTS": "constexpr",
        "COLUMNS": "constexpr",
        "BLOCK": "constexpr",
        "ROW": "constexpr",
    }
    sources += [
        ASTSource(
            kernels.merge_moments,
            merge,
            {"COUNTS": counts, "COLUMNS": columns, "BLOCK": row_kernels.MERGE_BLOCK, "ROW": 1024},
        )
        for counts, columns in ((True, len(row_kernels.MOMENT_COLUMNS)), (False, 3))
    ]
    sources.append(
        ASTSource(
            kernels.merge_update,
            {"rows_ptr": "*fp64", "offsets_ptr": "*i64", "out_ptr": "*fp32", "BLOCK": "constexpr"},
            {"BLOCK": row_kernels.MERGE_BLOCK},
        )
    )
    for source in sources:
        compiled = triton.compile(
            source, target=GPUTarget("cuda", arch, 32), options={"num_warps": row_kernels.WARPS}
        )
        assert compiled.asm["cubin"], source.name


def test_a_kernel_that_cannot_launch_hands_over_to_the_torch_ops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Compiled kernels on host tensors fail for real (no GPU driver takes them): the
    statistics come from the torch ops, right, and the kernels stay off after one warning."""
    monkeypatch.setattr(_foreach, "_segmented", lambda device: True)
    monkeypatch.setattr(row_kernels, "_devices", ("cuda", "cpu"))
    monkeypatch.setattr(row_kernels, "_tables", {})
    monkeypatch.setattr(row_kernels, "_failed", False)
    cpu = torch.device("cpu")
    xs = special_tensors(torch.float32)
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        assert_grad_block(stats.grad_stats(xs, stats.numels(xs)), xs)
        assert not row_kernels.usable(cpu)
        with row_kernels.use_kernels(True):  # off for the process, whatever is asked
            assert not row_kernels.usable(cpu)
        finite = [x for x in xs if x.isfinite().all()]
        assert_weight_block(stats.weight_stats(finite, stats.numels(finite)), finite)
    warnings = [r.getMessage() for r in caplog.records if "fused statistics kernel" in r.message]
    assert len(warnings) == 1 and "moment_rows failed" in warnings[0], warnings


def test_the_kernels_are_for_cuda_and_can_be_switched_off() -> None:
    assert not row_kernels.usable(torch.device("cpu"))
    matrix = torch.zeros(2, 1024)
    assert row_kernels.moment_rows(matrix, torch.ones(2, dtype=torch.int32), counts=True) is None
    with row_kernels.use_kernels(False):
        assert not row_kernels.usable(torch.device("cuda"))
    assert row_kernels.usable(torch.device("cuda"))
