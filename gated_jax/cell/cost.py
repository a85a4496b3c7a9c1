r"""When to go parallel: the cost model behind ``gated_scan(method="auto")``.

A method's time on a platform is predicted as latency terms plus throughput terms,

.. math::

    t = n_\mathrm{steps}\, t_\mathrm{step} + n_\mathrm{levels}\, t_\mathrm{level}
      + k\, t_\mathrm{iter}
      + \frac{W_\mathrm{loop}}{R_\mathrm{loop}} + \frac{W_\mathrm{bulk}}{R_\mathrm{bulk}}
      + \frac{W_\mathrm{scan}}{R_\mathrm{scan}},

with :class:`PlatformConstants` measured on the platform (``gated-jax bench --only platform``)
and, per method, the counts of a :class:`Cost`: dependent steps of a sequential loop (each pays
the loop's per-step latency ``step_s``), associative-scan levels (``level_s`` each), Newton
iterations ``k`` (``iteration_s`` each: the while loop, the residual test), multiply-adds done
inside a sequential loop (small ``(B, m) x (m, h)`` products, ``loop_macs_per_s``), in large
batched products over all ``T B`` steps (``bulk_macs_per_s``) and elementwise work of
associative scans and whole-sequence cell evaluations (``scan_elems_per_s``, in state elements).

The counts, for ``T`` steps, batch ``B``, ``n`` inputs, ``m`` units, and ``h`` the width of
``W_z``'s blocks (``m`` dense, ``h`` for heads ``(H, h, h)``, 1 diagonal, 0 for minGRU), so that
one step's recurrent product is ``r = B m h`` multiply-adds:

================  =====================================================================
method            forward
================  =====================================================================
``sequential``    ``T`` steps; ``T (r + 4 B m)`` loop MACs; ``2 T B n m`` bulk (projections)
``deer``          per iteration: the cell at every step, ``T r`` bulk and ``~8 T B m``
                  elements; one affine scan in the Jacobian's structure, ``2 ceil(log2 T)``
                  levels and ``~2 T`` compositions: ``6 T B m`` elements (diagonal: minGRU,
                  a diagonal ``w_z``) or ``2 T B m h (h + 1)`` bulk (blocks: heads, dense)
``quasi_deer``    as ``deer`` with a diagonal scan (the cell evaluation keeps ``T r``);
                  a distinct method only for dense and head ``w_z``
================  =====================================================================

and for the backward pass: the sequential adjoint loop (``T`` steps, the same loop MACs) plus
the weight gradients as bulk products (``sequential``, and ``quasi_deer`` on dense or head
cells), or one reverse affine scan in the Jacobian's structure plus the same weight gradients
(``deer``, and every parallel method on minGRU and diagonal cells). minGRU (``w_z=None``) takes
one scan (``k = 1``). Each method is one entry of :data:`METHOD_COSTS` (forward and backward
counts, and whether it is a distinct candidate for a cell); a new method is one more entry
there. The chunked hybrid (``chunked``) runs ``k + 2`` sequential passes of ``L = ceil(sqrt(T))``
steps over all ``C = T / L`` chunks at once, ``k`` of them carrying the chunk's Jacobian
product (``L B C m h^2`` loop MACs, ``h`` the block width: ``m`` dense, 1 diagonal) and
followed by an affine scan over the ``C`` chunk starts; its backward pass is two reverse
passes over the chunks around one adjoint scan over the starts.

**Iterations.** :func:`estimate_iterations` reads a contraction rate ``rho`` from a short
probe of the first :data:`PROBE_STEPS` steps of at most :data:`PROBE_BATCH` sequences: the
geometric mean of :func:`~gated_jax.cell.jacobian_norm_bound` (an upper bound on
``||J[t]||_2``, so a certified rate) when it is below 1, else ``exp`` of the
:func:`~gated_jax.cell.lyapunov_exponent` of the probe. With ``d = log(tol) / log(rho)`` steps
of memory, exact Newton (quadratic) is estimated at ``ceil(log2(1 + d)) + 2`` iterations and
quasi-Newton (linear) at ``max(that, ceil(d / 2))``, both at most ``T``; a rate at or above 1
(an expanding cell) is ``T`` iterations. These are heuristics, compared with the measured
counts in ``gated-jax report`` (section "parallel"). The probe needs values: under ``jax.jit``
(the parameters or inputs are tracers) the estimate is the static rule
:data:`STATIC_ITERATIONS` instead, larger than the counts measured on contractive cells, so
that under ``jit`` ``auto`` errs towards the sequential loop.

**Decision.** :func:`decide` predicts every candidate's time for the shapes and iteration
estimates (forward+backward by default) and takes the fastest, but a parallel method only when
it is predicted at least :data:`MARGIN` times faster than the sequential loop (the model's
error is a few tens of percent). The probe runs only when a parallel method would win even
with one iteration. Without shapes (``resolve_method("auto")``) the answer is
``"sequential"``.

**Constants.** :func:`platform_constants` reads the cache written by ``gated-jax bench --only
platform`` (``$XDG_CACHE_HOME/gated_jax/platform-<backend>.json``, default
``~/.cache/gated_jax``), else the shipped defaults :data:`SHIPPED` (CPU: measured on a 2-core
machine; GPU and TPU: conservative guesses, unmeasured, with a slow scan so that the
sequential loop wins unless ``T`` is large).

References:
  X. Gonzalez, L. Kozachkov, D. M. Zoltowski, K. L. Clarkson, S. W. Linderman, "Predictability
  enables parallelization of nonlinear state space models", NeurIPS 2025 (iterations follow
  the largest Lyapunov exponent).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gated_jax._validate import choice, fail, finite_float, positive_int
from gated_jax.cell import step as _step
from gated_jax.cell._affine import default_tol, scan_levels
from gated_jax.cell.chunked import chunk_length
from gated_jax.cell.diagnostics import jacobian_norm_bound, lyapunov_exponent

__all__ = [
    "MARGIN",
    "ELEMENTWISE",
    "METHOD_COSTS",
    "SHIPPED",
    "STATIC_ITERATIONS",
    "Cost",
    "Decision",
    "Iterations",
    "MethodCost",
    "PlatformConstants",
    "Shape",
    "cache_path",
    "decide",
    "estimate_iterations",
    "iterations_from_rate",
    "load_constants",
    "platform_constants",
    "predict",
    "save_constants",
    "shape_of",
]

MARGIN = 1.25
"""A parallel method is chosen only when predicted this many times faster than sequential."""

PROBE_STEPS = 64
"""Steps of the probe that estimates the contraction rate."""

PROBE_BATCH = 4
"""Sequences of the probe (the first ones of the batch)."""

STATIC_ITERATIONS = {"newton": 12, "quasi": 32}
"""Iteration estimates when the probe cannot run (under ``jit``): exact Newton, quasi-Newton."""

ELEMENTWISE = 4
"""Elementwise operations per state element of one cell step (gate, sigmoid, mix), counted as
loop multiply-adds inside the sequential loop and as scan elements outside it."""

CACHE_FORMAT = 1


class PlatformConstants(NamedTuple):
    """The measured speed of a platform (seconds and per-second rates; see the module)."""

    backend: str
    step_s: float
    level_s: float
    iteration_s: float
    loop_macs_per_s: float
    bulk_macs_per_s: float
    scan_elems_per_s: float
    source: str = "shipped"


RATES = (
    "step_s",
    "level_s",
    "iteration_s",
    "loop_macs_per_s",
    "bulk_macs_per_s",
    "scan_elems_per_s",
)
"""The numeric fields of :class:`PlatformConstants`."""

SHIPPED: dict[str, PlatformConstants] = {
    # measured with `gated-jax bench --only platform` on a 2-core CPU shared with other jobs
    # (load 9-14), rounded: the loop's per-step latency is small, the associative scan slow
    "cpu": PlatformConstants("cpu", 1.0e-7, 2.5e-6, 5.0e-5, 1.0e10, 3.0e10, 1.8e8),
    # unmeasured, conservative guesses (a launch-bound loop step of ~10 us was measured on an
    # H200 in an earlier round): a slow scan, so that the loop wins unless T is large
    "gpu": PlatformConstants("gpu", 1.0e-5, 5.0e-5, 2.0e-4, 1.0e12, 1.0e13, 5.0e10),
    "tpu": PlatformConstants("tpu", 1.0e-5, 5.0e-5, 2.0e-4, 1.0e12, 1.0e13, 5.0e10),
}
"""Constants used when no cache file exists, per ``jax.default_backend()``; an unknown
backend takes the GPU guesses."""


@dataclasses.dataclass(frozen=True)
class Cost:
    """Counts of one method's run (see the module): latency and work terms."""

    steps: float = 0.0
    levels: float = 0.0
    iterations: float = 0.0
    loop_macs: float = 0.0
    bulk_macs: float = 0.0
    scan_elems: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )

    def times(self, k: float) -> Cost:
        return Cost(*(k * a for a in dataclasses.astuple(self)))

    @property
    def depth(self) -> float:
        """Dependent sequential operations: loop steps plus scan levels."""
        return self.steps + self.levels

    @property
    def work(self) -> float:
        """Multiply-adds and elementwise operations, all counted alike."""
        return self.loop_macs + self.bulk_macs + self.scan_elems


class Shape(NamedTuple):
    """What the cost depends on: ``T``, ``B``, ``n``, ``m`` and ``W_z``'s structure ``kind``
    (``None``, ``"dense"``, ``"diagonal"``, ``"heads"``) with block width ``h``."""

    T: int
    B: int
    n: int
    m: int
    kind: str | None = "dense"
    h: int = 0

    @property
    def r(self) -> int:
        """Multiply-adds of one step's recurrent product over the batch: ``B m h``."""
        return self.B * self.m * self.width

    @property
    def width(self) -> int:
        return {None: 0, "diagonal": 1, "dense": self.m, "heads": self.h}[self.kind]


def shape_of(params, T: int, B: int) -> Shape:
    """The :class:`Shape` of ``params`` (a :class:`~gated_jax.cell.GatedParams`) at ``T, B``."""
    m, n = np.shape(params.w_x)
    kind = _step.recurrent_kind(params.w_z)
    h = int(np.shape(params.w_z)[-1]) if kind == "heads" else 0
    return Shape(int(T), int(B), int(n), int(m), kind, h)


# ---- the methods' counts ---------------------------------------------------------------------


def _projections(s: Shape) -> Cost:
    return Cost(bulk_macs=2.0 * s.T * s.B * s.n * s.m)


def _loop(s: Shape) -> Cost:
    """One sequential pass: ``T`` steps of the recurrent product and the elementwise cell."""
    return Cost(steps=s.T, loop_macs=s.T * (s.r + ELEMENTWISE * s.B * s.m))


def _weight_grads(s: Shape) -> Cost:
    """``dW_x, dW_c, dx`` (``4 T B n m``), ``dW_z`` and the recomputed gate (``2 T r``)."""
    return Cost(bulk_macs=4.0 * s.T * s.B * s.n * s.m + 2.0 * s.T * s.r)


def _scan(s: Shape, blocks: bool) -> Cost:
    """One affine scan, ``~2 T`` compositions in ``2 ceil(log2 T)`` levels."""
    levels = 2 * scan_levels(max(s.T, 1))
    if blocks:
        h = s.width
        return Cost(levels=levels, bulk_macs=2.0 * s.T * s.B * s.m * h * (h + 1))
    return Cost(levels=levels, scan_elems=6.0 * s.T * s.B * s.m)


def _evaluation(s: Shape, blocks: bool) -> Cost:
    """The cell at every step along an iterate, its residual and ``b = f - A z``."""
    apply = Cost(bulk_macs=s.T * s.B * s.m * s.width) if blocks else Cost()
    return Cost(bulk_macs=s.T * s.r, scan_elems=2.0 * ELEMENTWISE * s.T * s.B * s.m) + apply


def _structured(s: Shape) -> bool:
    """Whether the exact Jacobian is made of blocks (dense or heads) rather than diagonal."""
    return s.kind in ("dense", "heads")


def _newton(s: Shape, k: int, blocks: bool) -> Cost:
    if s.kind is None:  # minGRU: one exact diagonal scan
        k, blocks = 1, False
    step = _evaluation(s, blocks) + _scan(s, blocks) + Cost(iterations=1)
    return _projections(s) + step.times(k)


def _sequential_fwd(s: Shape, k: int) -> Cost:
    return _projections(s) + _loop(s)


def _sequential_bwd(s: Shape) -> Cost:
    return _loop(s) + _weight_grads(s) + Cost(scan_elems=ELEMENTWISE * s.T * s.B * s.m)


def _deer_fwd(s: Shape, k: int) -> Cost:
    return _newton(s, k, _structured(s))


def _deer_bwd(s: Shape) -> Cost:
    """One reverse scan over ``J^T`` in its structure, then the weight gradients."""
    blocks = _structured(s)
    return _evaluation(s, blocks) + _scan(s, blocks) + _weight_grads(s)


def _quasi_fwd(s: Shape, k: int) -> Cost:
    return _newton(s, k, False)


def _quasi_bwd(s: Shape) -> Cost:
    """The sequential closed-form adjoint loop (``O(T m)`` memory) on dense and head cells."""
    return _sequential_bwd(s) if _structured(s) else _deer_bwd(s)


def _chunks(s: Shape) -> tuple[Shape, Shape]:
    """The chunked hybrid's two shapes: one chunk of ``L`` steps over ``B C`` sequences (every
    chunk at once) and the ``C`` chunk starts that Newton solves for."""
    L = chunk_length(s.T)
    C = -(-s.T // L)
    return s._replace(T=L, B=s.B * C), s._replace(T=C)


def _chunk_pass(s: Shape, k: int) -> Cost:
    """``k + 2`` sequential passes over one chunk (all chunks at once); ``k`` of them carry the
    chunk's Jacobian product in ``W_z``'s structure (``h^2`` per unit and step, ``h = m``
    dense, ``1`` diagonal and minGRU), each followed by an affine scan over the ``C`` starts."""
    chunk, starts = _chunks(s)
    product = Cost(loop_macs=chunk.T * chunk.B * chunk.m * max(chunk.width, 1) ** 2)
    update = product + _scan(starts, _structured(s)) + Cost(iterations=1)
    return _loop(chunk).times(k + 2) + update.times(k)


def _layout(s: Shape) -> Cost:
    """The chunk layout: inputs and states copied into and out of ``(C, L)`` blocks."""
    return Cost(scan_elems=2.0 * s.T * s.B * s.m)


def _chunked_fwd(s: Shape, k: int) -> Cost:
    return _projections(s) + _layout(s) + _chunk_pass(s, 1 if s.kind is None else k)


def _chunked_bwd(s: Shape) -> Cost:
    """Two reverse passes over each chunk around one adjoint solve over the chunk starts, and
    the elementwise adjoint terms of the sequential backward pass."""
    chunk, starts = _chunks(s)
    elementwise = Cost(scan_elems=ELEMENTWISE * s.T * s.B * s.m)
    return (
        _loop(chunk).times(2)
        + _scan(starts, _structured(s))
        + _weight_grads(s)
        + elementwise
        + _layout(s)
    )


class MethodCost(NamedTuple):
    """One method of the model: forward counts at ``k`` iterations, backward counts, whether
    it is a distinct candidate for a shape, and which iteration estimate it uses."""

    forward: Callable[[Shape, int], Cost]
    backward: Callable[[Shape], Cost]
    applies: Callable[[Shape], bool]
    iterations: str  # "none", "newton" or "quasi"


METHOD_COSTS: dict[str, MethodCost] = {
    "sequential": MethodCost(_sequential_fwd, _sequential_bwd, lambda s: True, "none"),
    "deer": MethodCost(_deer_fwd, _deer_bwd, lambda s: True, "newton"),
    "quasi_deer": MethodCost(_quasi_fwd, _quasi_bwd, _structured, "quasi"),
    "chunked": MethodCost(_chunked_fwd, _chunked_bwd, lambda s: True, "newton"),
}
"""The methods ``auto`` chooses from, by name (``gated_scan``'s ``method``)."""


def predict(
    constants: PlatformConstants, method: str, shape: Shape, k: int = 1, *, grad: bool = True
) -> float:
    """Predicted seconds of ``method`` at ``shape`` with ``k`` iterations (forward+backward
    when ``grad``), from ``constants``."""
    entry = METHOD_COSTS[choice("method", method, tuple(METHOD_COSTS))]
    cost = entry.forward(shape, k) + (entry.backward(shape) if grad else Cost())
    c = constants
    return (
        cost.steps * c.step_s
        + cost.levels * c.level_s
        + cost.iterations * c.iteration_s
        + cost.loop_macs / c.loop_macs_per_s
        + cost.bulk_macs / c.bulk_macs_per_s
        + cost.scan_elems / c.scan_elems_per_s
    )


# ---- iteration estimates ---------------------------------------------------------------------


class Iterations(NamedTuple):
    """Estimated iterations of exact Newton and of quasi-Newton, the rate ``rho`` they came
    from (``nan`` for the static rule) and how it was read (``"bound"``, ``"lyapunov"``,
    ``"static"``, ``"exact"`` for minGRU)."""

    newton: int
    quasi: int
    rho: float
    how: str


def iterations_from_rate(rho: float, tol: float, T: int) -> tuple[int, int]:
    """``(newton, quasi)`` iterations for a contraction rate ``rho`` per step (module)."""
    if not rho < 1.0:
        return T, T
    d = math.log(tol) / math.log(max(rho, 1e-300)) if rho > 0 else 1.0
    newton = min(T, max(1, math.ceil(math.log2(1.0 + d)) + 2))
    return newton, min(T, max(newton, math.ceil(d / 2)))


def _is_concrete(*arrays) -> bool:
    leaves = jax.tree.leaves(arrays)
    return not any(isinstance(a, jax.core.Tracer) for a in leaves)


def _probe_rate(params, xs, z0) -> tuple[float, str]:
    """The contraction rate of the probe: the bound when it certifies one, else the LLE's."""
    P = min(xs.shape[-2], PROBE_STEPS)
    xs_p = jnp.reshape(xs, (-1,) + xs.shape[-2:])[:PROBE_BATCH, :P]
    z0_p = None if z0 is None else jnp.reshape(z0, (-1, z0.shape[-1]))[: xs_p.shape[0]]
    if z0_p is not None and z0_p.shape[0] != xs_p.shape[0]:
        z0_p = jnp.broadcast_to(z0_p[:1], (xs_p.shape[0], z0_p.shape[-1]))
    bound = np.asarray(jacobian_norm_bound(params, xs_p, z0_p), np.float64)
    rho = float(np.max(np.exp(np.mean(np.log(np.maximum(bound, 1e-300)), axis=-1))))
    if rho < 1.0:
        return rho, "bound"
    lle = float(np.max(np.asarray(lyapunov_exponent(params, xs_p, z0_p))))
    return (math.exp(lle) if math.isfinite(lle) else math.inf), "lyapunov"


def estimate_iterations(params, xs, z0=None, *, tol: float | None = None) -> Iterations:
    """Estimated Newton and quasi-Newton iterations for ``params`` on ``xs`` ``(..., T, n)``
    (module docstring): from a probe when the arrays have values, else the static rule.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import init_gated_params
      >>> from gated_jax.cell.cost import estimate_iterations
      >>> p = init_gated_params(jax.random.key(0), 3, 8)
      >>> est = estimate_iterations(p, jnp.ones((2, 100, 3)))
      >>> est.how in ("bound", "lyapunov"), 1 <= est.newton <= est.quasi <= 100
      (True, True)
      >>> estimate_iterations(p._replace(w_z=None), jnp.ones((2, 100, 3))).newton
      1
    """
    T = int(np.shape(xs)[-2])
    if params.w_z is None:
        return Iterations(1, 1, math.nan, "exact")
    if T == 0 or not _is_concrete(params, xs, z0):
        return Iterations(
            min(T, STATIC_ITERATIONS["newton"]),
            min(T, STATIC_ITERATIONS["quasi"]),
            math.nan,
            "static",
        )
    tol = default_tol(jnp.result_type(xs, params.w_x)) if tol is None else tol
    rho, how = _probe_rate(params, xs, z0)
    newton, quasi = iterations_from_rate(rho, tol, T)
    return Iterations(newton, quasi, rho, how)


# ---- the decision ----------------------------------------------------------------------------


class Decision(NamedTuple):
    """The chosen method, every candidate's predicted seconds, the iterations used and the
    constants' source."""

    method: str
    seconds: dict[str, float]
    iterations: Iterations | None
    source: str


def _times(c: PlatformConstants, shape: Shape, it: Iterations, grad: bool) -> dict[str, float]:
    out = {}
    for name, entry in METHOD_COSTS.items():
        if entry.applies(shape):
            k = {"none": 0, "newton": it.newton, "quasi": it.quasi}[entry.iterations]
            out[name] = predict(c, name, shape, k, grad=grad)
    return out


def _pick(times: dict[str, float]) -> str:
    seq = times["sequential"]
    name = min(times, key=lambda k: times[k])
    return name if times[name] * MARGIN <= seq else "sequential"


def decide(
    shape: Shape,
    constants: PlatformConstants,
    iterations: Iterations | Callable[[], Iterations],
    *,
    grad: bool = True,
) -> Decision:
    """The method ``auto`` runs at ``shape`` on a platform with ``constants``.

    ``iterations`` is an :class:`Iterations` or a function computing one (the probe), called
    only when a parallel method would win with a single iteration.

    Examples:
      >>> from gated_jax.cell.cost import SHIPPED, Iterations, Shape, decide
      >>> it = Iterations(8, 8, 0.5, "bound")  # 8 Newton iterations
      >>> decide(Shape(4096, 16, 256, 256, "diagonal"), SHIPPED["cpu"], it).method
      'sequential'
    """
    T = positive_int("T", shape.T, minimum=0)
    positive_int("B", shape.B)
    positive_int("m", shape.m)
    if T < 2:
        return Decision("sequential", {}, None, constants.source)
    if callable(iterations):
        optimistic = _times(constants, shape, Iterations(1, 1, 0.0, "optimistic"), grad)
        if _pick(optimistic) == "sequential":
            return Decision("sequential", optimistic, None, constants.source)
        iterations = iterations()
    times = _times(constants, shape, iterations, grad)
    return Decision(_pick(times), times, iterations, constants.source)


# ---- the platform constants: shipped, cached -------------------------------------------------


def cache_path(backend: str | None = None) -> Path:
    """``$XDG_CACHE_HOME/gated_jax/platform-<backend>.json`` (default ``~/.cache``)."""
    backend = jax.default_backend() if backend is None else backend
    if not isinstance(backend, str) or not backend.isidentifier():
        raise fail("backend", backend, "a backend name such as 'cpu', 'gpu' or 'tpu'")
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "gated_jax" / f"platform-{backend}.json"


def _checked(values: dict[str, Any], backend: str, source: str) -> PlatformConstants:
    rates = {k: finite_float(k, values.get(k), minimum=0.0, strict=True) for k in RATES}
    return PlatformConstants(backend, **rates, source=source)  # type: ignore[arg-type]


def save_constants(constants: PlatformConstants, path: str | Path | None = None) -> Path:
    """Write ``constants`` to ``path`` (default :func:`cache_path` of their backend) as sorted
    JSON, each rate to 4 significant digits (the same constants give the same bytes)."""
    if not isinstance(constants, PlatformConstants):
        raise fail("constants", constants, "a PlatformConstants")
    c = _checked(constants._asdict(), constants.backend, constants.source)
    path = cache_path(c.backend) if path is None else Path(path)
    data = {"format": CACHE_FORMAT, "backend": c.backend}
    data.update({k: float(f"{getattr(c, k):.4g}") for k in RATES})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def load_constants(path: str | Path) -> PlatformConstants:
    """The constants saved in ``path`` by :func:`save_constants` (``source`` is the path)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise fail("path", str(path), f"a readable JSON file of platform constants ({e})") from e
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise fail("path", str(path), f"a platform-constants file of format {CACHE_FORMAT}")
    return _checked(data, str(data.get("backend")), str(path))


def platform_constants(platform: str | None = None) -> PlatformConstants:
    """The constants ``auto`` uses on ``platform`` (default: JAX's default backend): the cache
    file when it exists (:func:`cache_path`), else :data:`SHIPPED`."""
    backend = jax.default_backend() if platform is None else platform
    path = cache_path(backend)
    if path.is_file():
        return load_constants(path)
    return SHIPPED.get(backend, SHIPPED["gpu"]._replace(backend=backend))
