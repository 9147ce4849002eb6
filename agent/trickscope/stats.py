"""Per-layer statistics and histograms, computed as device ops without reading back to the host.

(On CPU, where a tensor is host memory and a read waits for nothing, the per-tensor path reads a
few of its own per-tensor results to skip whole passes, through :mod:`trickscope._host`: see
:func:`_known_finite`.)

Every function takes tensors of one (device, dtype) group and returns float32 results, one column
per tensor. The scalar statistics work in a :class:`Scratch`: one float32 flat buffer per group,
allocated once and reused, so that a due step makes a handful of passes over memory and allocates
nothing the size of the model (on CPU a fresh allocation costs page faults on every pass).

Definitions match the obvious per-tensor torch expressions, which the tests use as reference:
``grad_norm`` = ``vector_norm(g)``, ``grad_max`` = ``g.abs().max()``, ``grad_mean`` = ``g.mean()``,
``grad_std`` = ``g.std()`` (unbiased), ``grad_zero_frac`` = ``(g == 0).float().mean()``,
``grad_nan`` = ``g.isnan().sum()``, ``grad_inf`` = ``g.isinf().sum()``, and likewise for weights;
``update_ratio`` = ``‖w_after − w_before‖ / ‖w_before‖``. A histogram has ``bins`` equal bins over
the tensor's finite ``[min, max]`` with ``torch.histc``'s edges and rounding; NaN and ±Inf are
counted apart.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from trickscope import _foreach, _host, row_kernels, streamed
from trickscope.segments import ROW, RowLayout, padded, to_device

GRAD_STATS = (
    "grad_norm",
    "grad_max",
    "grad_mean",
    "grad_std",
    "grad_zero_frac",
    "grad_nan",
    "grad_inf",
)
WEIGHT_STATS = ("weight_norm", "weight_mean", "weight_std")
UPDATE_STAT = "update_ratio"
TOTAL_GRAD_NORM = "grad_norm/total"
AMP_SCALE = "amp/scale"
AMP_SKIPPED = "amp/skipped_steps"  # steps the GradScaler skipped so far
GRAD_HIST = "grad_hist"
WEIGHT_HIST = "weight_hist"
BINS = 64
# Rows of :data:`GRAD_STATS` that scale with the gradient (undone for a fused AMP optimizer).
GRAD_SCALED_ROWS = 4


def numels(tensors: list[Tensor]) -> Tensor:
    """Element counts as a float32 tensor on the tensors' device (built once per layout).

    The host→device copy goes through pinned memory so that it does not block on CUDA.
    """
    counts = torch.tensor([float(t.numel()) for t in tensors], dtype=torch.float32)
    return to_device(counts, tensors[0].device)


Shapes = tuple[torch.Size, ...]


def shapes_of(tensors: list[Tensor]) -> Shapes:
    """The key of a buffer layout: the tensors' shapes."""
    return tuple(t.shape for t in tensors)


class Scratch:
    """A reusable float32 buffer for one (device, dtype) group, laid out as the tensors at hand.

    :meth:`bind` points ``views`` (one per tensor) and ``matrix`` (the whole buffer as rows, see
    :mod:`trickscope.segments`) at a prefix of one storage tensor, with one cached layout per list
    of shapes: gradients (only the parameters that have one), weights and the update share the
    storage in turn, and a due step allocates nothing the size of the model.

    The storage is allocated on first use of ``views`` or ``matrix``, not by :meth:`bind`: where
    the statistics read the tensors in place (float32 on CPU, the row kernels on CUDA) a group
    never allocates it, and otherwise it is as large as the largest block a caller binds
    (``trickscope.watch`` cuts a model into blocks of a bounded size).
    """

    def __init__(self, tensors: list[Tensor], limit: int | None = None) -> None:
        self.device = tensors[0].device
        # Elements the storage may hold (None: as many as a caller binds). The statistics of a
        # larger block that must be loaded go through it in parts (:func:`_in_parts`).
        self.limit = limit
        self._storage = torch.empty(0, dtype=torch.float32, device=self.device)
        # Per list of shapes: the views (once allocated) and the row layout (once needed).
        self._layouts: dict[Shapes, list[Any]] = {}
        self._zero_padded: RowLayout | None = None  # the layout whose padding is known to be 0
        self._shapes: Shapes = ()
        # Whether the buffer holds what the last load() copied in, in the current layout.
        self.loaded = False
        self.bind(tensors)

    @property
    def nbytes(self) -> int:
        """Bytes of the storage allocated so far."""
        return self._storage.numel() * 4

    def bind(self, tensors: list[Tensor], shapes: Shapes | None = None) -> Scratch:
        """Lay the buffer out as ``tensors`` (shapes only; ``shapes``, where the caller knows
        them already, saves a pass over the list); returns ``self``."""
        if shapes is None:
            shapes = shapes_of(tensors)
        if shapes not in self._layouts:
            self._layouts[shapes] = [None, None]
        if shapes != self._shapes:
            self._shapes, self.loaded = shapes, False
        return self

    @property
    def rows(self) -> RowLayout:
        """The bound tensors' row layout (built on first use: the CPU's per-tensor statistics
        of float32 tensors never need it)."""
        entry = self._layouts[self._shapes]
        if entry[1] is None:
            entry[1] = RowLayout([shape.numel() for shape in self._shapes], self.device)
        rows: RowLayout = entry[1]
        return rows

    @property
    def views(self) -> list[Tensor]:
        """One view of the buffer per bound tensor, of its shape (allocates on first use)."""
        views: list[Tensor] | None = self._layouts[self._shapes][0]
        if views is None or self.rows.elements > self._storage.numel():
            views = self._allocate()
        return views

    @property
    def matrix(self) -> Tensor:
        """The bound prefix of the buffer as a ``(rows, ROW)`` matrix (allocates on first use)."""
        if self.rows.elements > self._storage.numel():
            self._allocate()
        return self._storage[: self.rows.elements].view(-1, ROW)

    def _allocate(self) -> list[Tensor]:
        """The bound layout's views, growing the storage to hold it where it is too small."""
        rows, shapes = self.rows, self._shapes
        if rows.elements > self._storage.numel():
            self._storage = torch.empty(0, dtype=torch.float32, device=self.device)  # free first
            self._storage = torch.zeros(rows.elements, dtype=torch.float32, device=self.device)
            for entry in self._layouts.values():
                entry[0] = None
            self._zero_padded, self.loaded = None, False
        sizes = [shape.numel() for shape in shapes]
        views = [
            self._storage[start : start + size].view(shape)
            for start, size, shape in zip(rows.starts, sizes, shapes, strict=True)
        ]
        self._layouts[shapes][0] = views
        return views

    def too_large(self) -> bool:
        """Whether the bound layout is larger than the storage may grow."""
        return self.limit is not None and self.rows.elements > self.limit

    def load(self, tensors: list[Tensor], fused: bool) -> list[Tensor]:
        """Copy (and upcast) ``tensors`` into the buffer, zeros between them; returns the views."""
        with torch.no_grad():  # the tensors may be parameters: no graph, and no detach() each
            _foreach.copy_(self.views, tensors, fused=fused)
        if self._zero_padded is not self.rows:
            # Another layout of the same storage may have left values where this one pads; the
            # statistics only ever write the views or keep zeros zero, so once is enough.
            self.rows.zero_padding(self.matrix)
            self._zero_padded = self.rows
        self.loaded = True
        return self.views

    def forget(self) -> None:
        """Say that the last loaded values are not the ones a caller is working on (they read
        their tensors in place): ``loaded`` is ``False`` until the next :meth:`load`."""
        self.loaded = False

    def padding_changed(self) -> None:
        """Say that the padding may hold non-zeros now: the next :meth:`load` zeroes it."""
        self._zero_padded = None

    def sources(self, tensors: list[Tensor], fused: bool) -> list[Tensor]:
        """What the per-tensor (CPU) passes read: ``tensors`` themselves where they are float32,
        which saves a copy, else the buffer loaded with them (an upcast)."""
        if tensors[0].dtype == torch.float32:
            return [t.detach() for t in tensors]
        return self.load(tensors, fused)

    def load_nan_zeroed(self, sources: list[Tensor]) -> list[Tensor]:
        """The views, holding ``sources`` with NaN replaced by 0 (±Inf kept)."""
        if sources is self.views:
            self.matrix.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
        else:  # one pass that copies and replaces
            for view, source in zip(self.views, sources, strict=True):
                torch.nan_to_num(source, nan=0.0, posinf=math.inf, neginf=-math.inf, out=view)
        return self.views


def _scratch(tensors: list[Tensor], scratch: Scratch | None, shapes: Shapes | None) -> Scratch:
    if scratch is None:
        return Scratch(tensors)
    return scratch.bind(tensors, shapes)


def _by_rows(buf: Scratch, fused: bool) -> bool:
    """Whether to take the whole-buffer row formulation (CUDA) rather than per-tensor loops."""
    return fused and _foreach.segmented(buf.device)


def _column(values: list[Tensor]) -> Tensor:
    return torch.stack(values).to(torch.float32)


def _centered_std(
    buf: Scratch, sources: list[Tensor], mean: Tensor, n: Tensor, fused: bool
) -> Tensor:
    # Two-pass std (subtract the mean, then the L2 norm) avoids the cancellation of
    # E[x²] − E[x]² on tensors such as BatchNorm weights (all ones, std 0). The difference goes
    # to the buffer (in place when it holds the sources already). ``+ mean * 0`` turns the std
    # NaN wherever the mean is not finite, as ``Tensor.std`` does (a tensor holding +Inf alone
    # would otherwise give +Inf).
    if sources is buf.views:
        for view, value in zip(buf.views, mean.unbind(), strict=True):
            view.sub_(value)
    else:
        for view, source, value in zip(buf.views, sources, mean.unbind(), strict=True):
            torch.sub(source, value, out=view)
    spread = _column(_foreach.norm(buf.views, 2, fused=fused))
    return spread / (n - 1.0).sqrt() + mean * 0.0


# The one-pass variance (‖x‖² − n·mean²) / (n − 1) is used where n·mean² is at most this share
# of ‖x‖²: the subtraction then loses at most one bit of ‖x‖²'s float32 accuracy.
ONE_PASS_MEAN_SHARE = 0.5


def _finite_std(sources: list[Tensor], l2: Tensor, mean: Tensor, n: Tensor) -> Tensor:
    """Unbiased std of finite CPU tensors whose L2 norms and means are known: from those alone
    where the mean is small against the spread (the weights and gradients of large layers,
    mostly), by ``torch.std`` (one Welford pass) for the others, such as a LayerNorm weight near
    1. NaN for fewer than two elements, as ``Tensor.std`` gives."""
    energy = l2.double().square()
    mean_energy = n.double() * mean.double().square()
    std = ((energy - mean_energy).clamp_min(0.0) / (n.double() - 1.0)).sqrt().to(torch.float32)
    exact = (mean_energy > ONE_PASS_MEAN_SHARE * energy) & (n > 1)
    rest = [i for i, flag in enumerate(_host.read(exact)) if flag]
    if rest:
        std[rest] = torch.stack([torch.std(sources[i]) for i in rest])
    return torch.where(n > 1, std, math.nan)


def _row_squares(matrix: Tensor) -> Tensor:
    """Per row, the sum of squares (float64), NaN and ±Inf propagating as in ``vector_norm``."""
    norms: Tensor = torch.linalg.vector_norm(matrix, dim=1, dtype=torch.float64)
    return norms.square()


def _row_moments(buf: Scratch, *, counts: bool) -> Tensor:
    """Per row of the loaded buffer, by torch ops, the columns of
    :data:`row_kernels.MOMENT_COLUMNS` (the first three without ``counts``), float64."""
    rows, matrix = buf.rows, buf.matrix
    row_mean, row_m2 = rows.moments(matrix)
    columns = [_row_squares(matrix), row_mean * rows.row_counts(), row_m2]
    if counts:
        f64 = torch.float64
        columns += [
            matrix.ne(0).sum(dim=1, dtype=f64),
            matrix.isnan().sum(dim=1, dtype=f64),
            matrix.isinf().sum(dim=1, dtype=f64),
            torch.linalg.vector_norm(matrix, math.inf, dim=1).to(f64),
        ]
    return torch.stack(columns, 1)


def _per_tensor(rows: RowLayout, n: Tensor, per_row: Tensor) -> tuple[Tensor, ...]:
    """From per-row Σx², Σx, M2 and further columns to sum (float64): per tensor the L2 norm,
    mean and unbiased std, then the further columns' sums; every sum in one segmented
    reduction."""
    sums = rows.sum(per_row)
    mean = sums[:, 1] / n
    m2 = sums[:, 2] + rows.m2_between_rows(per_row[:, 1] / rows.row_counts(), mean)
    # As in _centered_std: NaN wherever the mean is not finite, as Tensor.std does.
    std = (m2 / (n - 1.0)).sqrt() + mean * 0.0
    return (sums[:, 0].sqrt(), mean, std, *sums[:, 3:].unbind(1))


def _kernel_sources(
    tensors: list[Tensor], buf: Scratch, fused: bool, *, loaded: bool = False
) -> list[Tensor] | None:
    """What the fused row kernels read: ``tensors`` in place where they can (no copy; the
    buffer, left as it was, no longer holds what they work on), else the buffer loaded with
    them (``loaded``: it is already); ``None`` where the kernels do not run."""
    if not row_kernels.usable(buf.device):
        return None
    if row_kernels.readable(tensors):
        buf.forget()
        return tensors
    if loaded:
        return buf.views
    return None if buf.too_large() else buf.load(tensors, fused)


def _grad_stats_by_rows(grads: list[Tensor], n: Tensor, buf: Scratch, fused: bool) -> Tensor:
    sources = _kernel_sources(grads, buf, fused)
    if sources is not None:
        block = row_kernels.grad_stats(sources, buf.rows)
        if block is not None:
            return block
    if buf.too_large():
        return _in_parts(grads, n, buf, fused, counts=True)
    buf.load(grads, fused)
    per_row = _row_moments(buf, counts=True)
    absmax = buf.rows.max(per_row[:, -1].contiguous())
    l2, mean, std, nonzero, nan, inf = _per_tensor(buf.rows, n, per_row[:, :-1])
    return torch.stack([l2, absmax, mean, std, (n - nonzero) / n, nan, inf]).to(torch.float32)


def grad_stats(
    grads: list[Tensor],
    n: Tensor,
    *,
    scratch: Scratch | None = None,
    fused: bool = True,
    shapes: Shapes | None = None,
) -> Tensor:
    """Statistics of :data:`GRAD_STATS`, shape ``(len(GRAD_STATS), len(grads))``, float32.

    Args:
        grads: Gradients of one (device, dtype) group.
        n: Their element counts, from :func:`numels`.
        scratch: The group's reusable buffer (one is made when missing or of another layout).
        fused: Use the fused kernels (``False``: the per-tensor reference loop).
        shapes: ``shapes_of(grads)``, where the caller keeps it (a due step's Python time counts
            on a GPU loop bound by the host).
    """
    buf = _scratch(grads, scratch, shapes)
    if _by_rows(buf, fused):
        return _grad_stats_by_rows(grads, n, buf, fused)
    if grads[0].dtype != torch.float32 and buf.too_large():  # an upcast would load it whole
        return _in_parts(grads, n, buf, fused, counts=True)
    x = buf.sources(grads, fused)
    l2 = _column(_foreach.norm(x, 2, fused=fused))
    absmax = _absmax(x)
    nonzero = _count_nonzero(x)
    mean = torch.stack([t.sum() for t in x]).to(torch.float32) / n
    zero_frac = (n - nonzero) / n
    if _known_finite(l2):
        # A NaN or ±Inf anywhere makes the norm non-finite: none here, so no counting passes.
        std = _finite_std(x, l2, mean, n)
        none = torch.zeros_like(l2)
        return torch.stack([l2, absmax, mean, std, zero_frac, none, none])
    if buf.too_large():  # the counting passes below go through the buffer
        return _in_parts(grads, n, buf, fused, counts=True)
    # NaN and ±Inf are non-zero: zeroing NaN, then ±Inf, and counting non-zeros after each
    # gives both counts exactly, in passes over our own buffer and without a branch.
    zeroed = buf.load_nan_zeroed(x)
    no_nan = _count_nonzero(zeroed)
    buf.matrix.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    finite_nonzero = _count_nonzero(zeroed)
    std = _centered_std(buf, zeroed, mean, n, fused)
    return torch.stack(
        [l2, absmax, mean, std, zero_frac, nonzero - no_nan, no_nan - finite_nonzero]
    )


def weight_stats(
    weights: list[Tensor],
    n: Tensor,
    *,
    scratch: Scratch | None = None,
    fused: bool = True,
    shapes: Shapes | None = None,
) -> Tensor:
    """Statistics of :data:`WEIGHT_STATS`, shape ``(len(WEIGHT_STATS), len(weights))``;
    arguments as :func:`grad_stats`'."""
    buf = _scratch(weights, scratch, shapes)
    if _by_rows(buf, fused):
        sources = _kernel_sources(weights, buf, fused)
        if sources is not None:
            block = row_kernels.weight_stats(sources, buf.rows)
            if block is not None:
                return block
        if buf.too_large():
            return _in_parts(weights, n, buf, fused, counts=False)
        buf.load(weights, fused)
        per_row = _row_moments(buf, counts=False)
        return torch.stack(_per_tensor(buf.rows, n, per_row)).to(torch.float32)
    if weights[0].dtype != torch.float32 and buf.too_large():
        return _in_parts(weights, n, buf, fused, counts=False)
    x = buf.sources(weights, fused)
    l2 = _column(_foreach.norm(x, 2, fused=fused))
    mean = torch.stack([t.sum() for t in x]).to(torch.float32) / n
    if _known_finite(l2):
        return torch.stack([l2, mean, _finite_std(x, l2, mean, n)])
    if buf.too_large():  # the centred pass writes the buffer
        return _in_parts(weights, n, buf, fused, counts=False)
    return torch.stack([l2, mean, _centered_std(buf, x, mean, n, fused)])


def _in_parts(
    tensors: list[Tensor], n: Tensor, buf: Scratch, fused: bool, *, counts: bool
) -> Tensor:
    """The statistics of a block larger than the buffer may grow, which must be loaded (half
    precision on CPU, non-finite values there, the torch ops on CUDA): runs of tensors that fit
    go through the buffer in turn. A tensor that does not fit alone is cut into pieces of the
    buffer's size, whose statistics (through the same fast paths) merge into the tensor's
    (:func:`trickscope.streamed.merge_pieces`); a piece that still does not fit (a slice of a
    non-contiguous tensor larger than the buffer) is read a chunk at a time
    (:func:`trickscope.streamed.moments`). Columns as the whole block's."""
    limit = buf.limit or 0
    stat = grad_stats if counts else weight_stats
    blocks: list[Tensor] = []
    start = 0
    for run in _runs([t.numel() for t in tensors], limit):
        members = tensors[start : start + run]
        if run == 1 and padded(members[0].numel()) > limit:
            pieces = streamed.pieces(members[0], max(limit // ROW, 1) * ROW)
            if len(pieces) > 1 and all(padded(p.numel()) <= limit for p in pieces):
                block = stat(pieces, numels(pieces), scratch=buf.bind(pieces), fused=fused)
                sizes = [p.numel() for p in pieces]
                blocks.append(streamed.merge_pieces(block, sizes, counts=counts)[:, None])
            else:
                blocks.append(streamed.moments(members[0], counts=counts)[:, None])
        else:
            part = n.narrow(0, start, run)
            blocks.append(stat(members, part, scratch=buf.bind(members), fused=fused))
        start += run
    return torch.cat(blocks, dim=1)


def _runs(sizes: list[int], limit: int) -> list[int]:
    """Lengths of the runs, in order, into which tensors of ``sizes`` go so that each run's
    row-aligned size is at most ``limit`` elements (a larger tensor is a run of its own)."""
    runs: list[int] = []
    total = 0
    for size in sizes:
        if runs and total + padded(size) <= limit:
            runs[-1] += 1
            total += padded(size)
        else:
            runs.append(1)
            total = padded(size)
    return runs


def _known_finite(values: Tensor) -> bool:
    """Whether ``values`` are on the CPU and all finite; ``False``, unread, on any device."""
    return values.device.type == "cpu" and all(_host.read(torch.isfinite(values)))


def _absmax(tensors: list[Tensor]) -> Tensor:
    """``max |x|`` of each tensor as one float32 vector (NaN wherever a tensor holds a NaN).

    A per-tensor ``aminmax`` (vectorised, one pass for both ends): on CPU the fused ``inf``-norm
    takes a slow scalar path.
    """
    # aminmax rejects empty tensors; their max |x| is 0, as the inf-norm says.
    ends = [torch.aminmax(t) if t.numel() else (t.new_zeros(()),) * 2 for t in tensors]
    low = torch.stack([end[0] for end in ends])
    high = torch.stack([end[1] for end in ends])
    return torch.maximum(high, -low).to(torch.float32)


def _count_nonzero(tensors: list[Tensor]) -> Tensor:
    """Non-zero elements of each tensor (NaN and ±Inf count) as one float32 vector."""
    return torch.stack([torch.count_nonzero(t) for t in tensors]).to(torch.float32)


def update_ratio(
    after: list[Tensor],
    before: Scratch,
    *,
    scratch: Scratch | None = None,
    fused: bool = True,
    after_loaded: bool = False,
    shapes: Shapes | None = None,
) -> Tensor:
    """‖after − before‖ / ‖before‖ per tensor, float32, shape ``(len(after),)``.

    Args:
        after: The tensors now.
        before: A buffer loaded with their values before (:meth:`Scratch.load`); it may be
            overwritten with the difference.
        scratch: A buffer for ``after`` where one is needed (an upcast, or the row formulation).
        fused: Use the fused kernels (``False``: the per-tensor reference loop).
        after_loaded: ``scratch`` may hold ``after`` already, in ``before``'s layout (as
            :func:`weight_stats` leaves it on the same tensors, unless it read them in place:
            ``Scratch.loaded`` says): the row formulation reuses it.
        shapes: ``shapes_of(after)``, where the caller keeps it.
    """
    with torch.no_grad():
        if _by_rows(before, fused):
            buf = _scratch(after, scratch, shapes)
            loaded = after_loaded and buf.loaded
            sources = _kernel_sources(after, buf, fused, loaded=loaded)
            if sources is not None:
                fused_ratio = row_kernels.update_ratio(before.matrix, sources, before.rows)
                if fused_ratio is not None:
                    return fused_ratio
            if not (loaded and buf.loaded):
                buf.load(after, fused)
            matrix = before.matrix
            squares = _row_squares(matrix)
            matrix.sub_(buf.matrix)  # before − after: the same norm; the padding stays zero
            sums = before.rows.sum(torch.stack([squares, _row_squares(matrix)], 1))
            ratio: Tensor = sums[:, 1].sqrt() / sums[:, 0].sqrt()
            return ratio.to(torch.float32)
        views = before.views
        scale = _column(_foreach.norm(views, 2, fused=fused))
        if after[0].dtype != torch.float32:  # upcast first: float32 snapshot minus half weights
            after = _scratch(after, scratch, shapes).load(after, fused)
        _foreach.sub_(views, after, fused=fused)
        return _column(_foreach.norm(views, 2, fused=fused)) / scale


def total_norm(norms: Tensor) -> Tensor:
    """The global gradient L2 norm from per-tensor L2 norms, as a 1-element tensor."""
    total: Tensor = torch.linalg.vector_norm(norms)
    return total.reshape(1)


# Rows of the buffer per pass (1 Mi elements): bounds the passes' temporaries (~17 MB: positions,
# their int64 bins, the per-row counts) whatever the block's size.
HIST_ROWS = 1024


def histograms(
    tensors: list[Tensor],
    bins: int = BINS,
    *,
    scratch: Scratch | None = None,
    fused: bool = True,
    shapes: Shapes | None = None,
) -> Tensor:
    """Fixed-bin histograms of each tensor's finite values, without a per-tensor kernel loop.

    Returns float64, shape ``(len(tensors), bins + 3)``: per tensor ``lo``, ``hi`` (the edges),
    the NaN/±Inf count, then the ``bins`` counts (float64 keeps counts exact up to 2⁵³). The edges
    are the finite min and max, widened by 1 either side when they coincide (as ``torch.histc``);
    a tensor without finite values gets edges ``[-1, 1]`` and no counts.

    The group is loaded into the row-aligned buffer (see :mod:`trickscope.segments`) with NaN in
    the padding. A pass over the rows takes each row's finite min and max, reduced per tensor to
    the edges; a second gives every element its bin (non-finite ones the extra slot ``bins``),
    counted per row with one ``scatter_add_`` (no two rows share a counter, so there is no
    contention on a GPU) and summed per tensor. Both passes go :data:`HIST_ROWS` rows at a time,
    so that the temporaries stay small whatever the model's size.
    """
    with torch.no_grad():
        buf = _scratch(tensors, scratch, shapes)
        buf.load(tensors, fused)
        rows, matrix = buf.rows, buf.matrix
        rows.fill_padding(matrix, math.nan)  # out of the bins; taken off the non-finite count
        buf.padding_changed()
        chunks = [slice(start, start + HIST_ROWS) for start in range(0, matrix.shape[0], HIST_ROWS)]
        row_lo = torch.empty(matrix.shape[0], device=matrix.device)
        row_hi = torch.empty_like(row_lo)
        inf = math.inf
        for chunk in chunks:
            part = matrix[chunk]
            torch.amin(
                torch.nan_to_num(part, nan=inf, posinf=inf, neginf=inf), 1, out=row_lo[chunk]
            )
            torch.amax(
                torch.nan_to_num(part, nan=-inf, posinf=-inf, neginf=-inf), 1, out=row_hi[chunk]
            )
        lo, hi = streamed.binned_range(rows.min(row_lo), rows.max(row_hi))
        span = hi - lo
        counts = torch.zeros(len(tensors), bins + 1, dtype=torch.float64, device=matrix.device)
        one = torch.ones(1, dtype=torch.float64, device=matrix.device)
        for chunk in chunks:
            # torch.histc's arithmetic, in float32 and in this order, so that edges round alike.
            # Per row of the chunk, its tensor: built per chunk, so that nothing per row of the
            # whole block outlives a pass.
            owner = rows.row_tensor(chunk)
            left = lo.index_select(0, owner)[:, None]
            width = span.index_select(0, owner)[:, None]
            position = (matrix[chunk] - left) * bins / width
            # Finite elements lie in [0, bins] (``hi`` itself goes in the last bin). Casting NaN
            # or ±Inf to an int is undefined: they become -1 first, which the remainder turns
            # into the slot ``bins``.
            position.nan_to_num_(nan=-1.0, posinf=-1.0, neginf=-1.0).clamp_(max=bins - 1)
            index = position.to(torch.int64).remainder_(bins + 1)
            per_row = torch.zeros(
                index.shape[0], bins + 1, dtype=torch.float64, device=index.device
            )
            per_row.scatter_add_(1, index, one.expand(index.shape))
            counts.index_add_(0, owner, per_row)
        nonfinite = counts[:, bins] - rows.padding
        return torch.cat(
            [lo.double()[:, None], hi.double()[:, None], nonfinite[:, None], counts[:, :bins]],
            dim=1,
        )
