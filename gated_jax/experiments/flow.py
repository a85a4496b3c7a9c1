r"""Gradient-flow sweeps: ``||dz[T]/dz[k]||`` against the lag ``T - k`` over grids of configs.

A configuration is ``(seed, rho, b, sigma)``: the spectral norm ``rho`` of the recurrent weights
(``W_z`` for the gated cell), the gate bias ``b`` (``b_c = b * 1``), the input scale ``sigma``
(``x[t] = sigma xi[t]``, ``xi[t] ~ N(0, I_n)``) and the seed, which draws the weights'
directions and ``xi`` on the host with NumPy, identically on every platform (see
:mod:`gated_jax.experiments.baselines` for each cell family's conventions). For each sequence
length ``T`` the grid of configurations is flattened and evaluated by
:func:`gated_jax.experiments.sharding.map_configs`: ``jax.vmap`` over configurations, chunked
with a tqdm bar, sharded over devices when there are several. Lengths are static shapes, so each
length is one compiled program.

Reading the result. Write ``g(L) = ||dz[T]/dz[T-L]||_2`` for the lag ``L``. The gradient of a
loss at time ``T`` reaching time ``T - L`` is ``dz[T]/dz[T-L]^T dl/dz[T]``, so ``g(L)`` is the
largest factor by which its norm can be multiplied on the way back: ``g > 1`` lets it grow,
``g << 1`` forces every direction to shrink. *Exploding* means
``g(L)`` grows exponentially with ``L``; *vanishing* means it decays exponentially. The summary
number is the growth rate ``log g(T) / T`` (per step; ``> 0`` explodes, ``< 0`` vanishes), an
estimate of the top Lyapunov exponent of the input-driven state dynamics.

Spectral norms. ``norm="svd"`` takes ``||P||_2`` from singular values (LAPACK on CPU: one call
per matrix, ``T + 1`` per configuration, which ``vmap`` cannot batch there); ``norm="power"``
uses :func:`gated_jax.linalg.spectral_norms`' repeated squaring of the Gram
matrix, pure batched matmuls with an a-posteriori error bound (``log sigma^2`` within ``1e-12``
in float64, ``1e-5`` in float32, plus rounding). Measured on the default grid of every family:
relative difference to the SVD path <= 5e-13 in float64, growth rates equal to 2e-16. The
default ``norm="auto"`` picks per platform (:func:`gated_jax.linalg.resolve_norm`):
``"svd"`` on CPU and ``"power"`` on GPU/TPU, where batched matmuls are faster than one SVD per
matrix (the figures are in ``benchmarks/sweep.py``'s output).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gated_jax._validate import (
    boolean,
    check_fits_in_memory,
    choice,
    device_list,
    fail,
    finite_floats,
    float_dtype,
    int_array,
    positive_int,
    present,
)
from gated_jax.experiments.baselines import FAMILIES, check_norm, random_bases, resolve_norm
from gated_jax.experiments.sharding import map_configs

__all__ = ["FlowSweep", "flow_sweep", "growth_rate"]

AXES = ("wz_norm", "gate_bias", "input_scale", "seed")


@dataclasses.dataclass(frozen=True)
class FlowSweep:
    """The result of :func:`flow_sweep` for one cell family.

    Attributes:
      cell: the family's name.
      n, m: input and state widths.
      wz_norms, gate_biases, input_scales, seeds: the grid axes (1-D arrays).
      norms: ``{T: array (W, B, S, R, T + 1)}``; ``norms[T][..., L] = ||dz[T]/dz[T - L]||_2``
        for the lag ``L = 0..T`` (``W, B, S, R`` index the four axes in that order).
    """

    cell: str
    n: int
    m: int
    wz_norms: np.ndarray
    gate_biases: np.ndarray
    input_scales: np.ndarray
    seeds: np.ndarray
    norms: dict[int, np.ndarray]

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(sorted(self.norms))

    def growth_rate(self, length: int) -> np.ndarray:
        """``log ||dz[T]/dz[0]|| / T`` per configuration, shape ``(W, B, S, R)``."""
        present("length", length, self.norms, f"a swept length, one of {self.lengths}")
        return growth_rate(self.norms[length])

    def save_npz(self, path: str | Path) -> Path:
        """Save the axes and ``norms_T<length>`` arrays to one ``.npz``."""
        path = Path(path)
        arrays = {f"norms_T{t}": a for t, a in self.norms.items()}
        np.savez(
            path,
            cell=np.array(self.cell),
            n=self.n,
            m=self.m,
            wz_norm=self.wz_norms,
            gate_bias=self.gate_biases,
            input_scale=self.input_scales,
            seed=self.seeds,
            **arrays,
        )
        return path

    def save_csv(self, path: str | Path) -> Path:
        """Save long-format rows ``cell,length,wz_norm,gate_bias,input_scale,seed,lag,norm``."""
        path = Path(path)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["cell", "length", *AXES, "lag", "norm"])
            for t in self.lengths:
                a = self.norms[t]
                for idx in np.ndindex(a.shape[:-1]):
                    head = [
                        self.cell,
                        t,
                        self.wz_norms[idx[0]],
                        self.gate_biases[idx[1]],
                        self.input_scales[idx[2]],
                        self.seeds[idx[3]],
                    ]
                    for lag, v in enumerate(a[idx]):
                        w.writerow([*head, lag, repr(float(v))])
        return path


def growth_rate(norms_by_lag: np.ndarray) -> np.ndarray:
    """``log(g(T)) / T`` from norms indexed by lag ``0..T`` on the last axis."""
    norms_by_lag = np.asarray(norms_by_lag, dtype=np.float64)
    length = norms_by_lag.shape[-1] - 1
    with np.errstate(divide="ignore"):
        return np.log(norms_by_lag[..., -1]) / max(length, 1)


def x64_scope(dtype):
    """``jax.enable_x64`` set for ``dtype``: on for float64 work, OFF for float32 work.

    Off for float32 as well, so that a float32 run is the same whatever the global flag: with
    x64 on, optax's Adam computes its bias correction in float64 (``int32 ** float`` promotes),
    which changed the float32 adding-problem results (tanh, T = 10: normalised MSE 0.02-0.12
    with x64 off, 0.03-0.07 with it on, same seeds).
    """
    return jax.enable_x64(jnp.dtype(dtype) == jnp.dtype(jnp.float64))


def config_flow_fn(cell: str, *, length: int, m: int, dtype=jnp.float64, norm: str = "svd"):
    """The per-configuration function ``(bases, seed_index, rho, b, sigma) -> g(0..T)``.

    ``bases`` is :func:`~gated_jax.experiments.baselines.random_bases` for all seeds (shared by
    every configuration); the configuration picks its seed's row, builds the family's weights
    (``FAMILIES[cell].init``), drives the cell with ``x = sigma * xi[:T]`` from ``z[0] = 0``,
    and returns ``||dz[T]/dz[T-L]||_2`` for ``L = 0..T`` (indexed by lag), the norms by method
    ``norm`` (``"svd"`` or ``"power"``, see
    :func:`~gated_jax.experiments.baselines.spectral_norms`).
    """
    check_norm(norm)
    fam = FAMILIES[cell]
    dt = jnp.dtype(dtype)

    def one(bases, seed_index, rho, bias, scale):
        base = jax.tree.map(lambda a: a[seed_index].astype(dt), bases)
        params = fam.init(base, rho.astype(dt), bias.astype(dt))
        xs = scale.astype(dt) * base["xs"][:length]
        z0 = jnp.zeros((fam.state_size(m),), dt)
        return fam.flow(params, xs, z0, norm=norm)[::-1]

    return one


def _check_sweep_fits(cell, rhos, biases, scales, lens, seeds, n, m, chunk_size, dt) -> None:
    """Refuse a grid whose arrays cannot fit in memory, before drawing or compiling anything."""
    d = FAMILIES[cell].state_size(m)
    count = float(rhos.size * biases.size * scales.size * seeds.size)
    T = float(lens.max())
    per_config = (T + 1) * d * d * 3  # Jacobians, their products, and the norms' work
    need = (min(chunk_size, count) * per_config + count * (T + 1)) * dt.itemsize
    draws = seeds.size * (4.0 * m * (n + m) + T * n) * 8  # random_bases, float64
    check_fits_in_memory(
        "lengths", lens.tolist(), need + draws, f"the sweep's Jacobians (d = {d}, T = {int(T)})"
    )


def flow_sweep(
    cell: str = "gated",
    *,
    wz_norms: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    gate_biases: Sequence[float] = (-2.0, 0.0, 2.0),
    input_scales: Sequence[float] = (0.5, 1.0, 2.0),
    lengths: Sequence[int] = (64,),
    seeds: Sequence[int] = (0, 1, 2, 3),
    n: int = 8,
    m: int = 16,
    dtype=jnp.float64,
    chunk_size: int = 256,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    norm: str = "auto",
) -> FlowSweep:
    r"""``||dz[T]/dz[T-L]||_2`` for every lag ``L``, every config of the grid and every length.

    The grid is the Cartesian product ``wz_norms x gate_biases x input_scales x seeds``; all its
    configurations for one length are evaluated by ONE vmapped, jit-compiled function (chunked
    by ``chunk_size``, sharded over ``devices``), never by a Python loop over configurations.

    Args:
      cell: ``"gated"`` (through :func:`gated_jax.cell.gradient_flow`), ``"tanh"``,
        ``"gru"`` or ``"lstm"`` (Flax cells; see :mod:`gated_jax.experiments.baselines`).
      wz_norms: spectral norms ``rho`` of the recurrent weights.
      gate_biases: gate biases ``b``.
      input_scales: input standard deviations ``sigma``.
      lengths: sequence lengths ``T`` (positive ints).
      seeds: non-negative int seeds.
      n, m: input and state widths.
      dtype: ``float64`` (default; enables x64 for the call) or ``float32``.
      chunk_size, devices, progress: see :func:`gated_jax.experiments.sharding.map_configs`.
      norm: how each ``||P||_2`` is computed: ``"svd"`` (exact to rounding, LAPACK per matrix
        on CPU), ``"power"`` (batched repeated squaring of ``P^T P`` with an a-posteriori
        bound; relative difference to ``"svd"`` <= 5e-13 measured in float64, <= 3e-6 in
        float32 with full float32 matmuls) or ``"auto"`` (default: ``"svd"`` when the sweep
        runs on one CPU device, ``"power"`` on GPU/TPU and on several CPU devices; an explicit
        ``"svd"`` on several CPU devices is refused, since LAPACK's SVD in a program sharded
        over XLA:CPU devices hangs). See
        :func:`gated_jax.linalg.spectral_norms`. float32 sweeps on a GPU/TPU
        run their matmuls at JAX's default precision (TF32 / bfloat16 passes, ~1e-3
        relative); float64, the default, is unaffected.

    Returns:
      A :class:`FlowSweep`.
    """
    choice("cell", cell, tuple(FAMILIES))
    rhos = finite_floats("wz_norms", wz_norms, minimum=0)
    biases = finite_floats("gate_biases", gate_biases)
    scales = finite_floats("input_scales", input_scales, minimum=0)
    lens = int_array("lengths", lengths, minimum=1)
    seeds_a = int_array("seeds", seeds, minimum=0)
    n, m = positive_int("n", n), positive_int("m", m)
    chunk_size = positive_int("chunk_size", chunk_size)
    progress = boolean("progress", progress)
    dt = float_dtype("dtype", dtype, ("float32", "float64"))
    devices = device_list("devices", devices)
    used = jax.devices() if devices is None else devices
    norm = resolve_norm(norm, used[0].platform, num_devices=len(used))
    if norm == "svd" and used[0].platform == "cpu" and len(used) > 1:
        # LAPACK's SVD in a program sharded over several XLA:CPU devices hangs (measured: a
        # 128-config sweep on 4 devices never returned; 4 s on one device)
        raise fail(
            "norm",
            "svd",
            f"'power' or 'auto' for a sweep on {len(used)} CPU devices (LAPACK's SVD in a "
            "program sharded over XLA:CPU devices hangs); for the SVD pass "
            "devices=jax.devices()[:1]",
        )
    _check_sweep_fits(cell, rhos, biases, scales, lens, seeds_a, n, m, chunk_size, dt)

    grid = np.meshgrid(rhos, biases, scales, np.arange(seeds_a.size), indexing="ij")
    shape = grid[0].shape
    np_dt = np.float64 if dt == jnp.float64 else np.float32
    bases = random_bases(seeds_a, n=int(n), m=int(m), length=int(lens.max()))
    bases = {k: v.astype(np_dt) for k, v in bases.items()}
    configs = [
        grid[3].ravel().astype(np.int32),
        grid[0].ravel().astype(np_dt),
        grid[1].ravel().astype(np_dt),
        grid[2].ravel().astype(np_dt),
    ]
    norms = {}
    with x64_scope(dt):
        for t in lens:
            t = int(t)
            fn = config_flow_fn(cell, length=t, m=int(m), dtype=dt, norm=norm)
            out = map_configs(
                fn,
                configs,
                shared=bases,
                chunk_size=chunk_size,
                devices=devices,
                progress=progress,
                desc=f"{cell} T={t}",
            )
            norms[t] = np.asarray(out).reshape(*shape, t + 1)
    return FlowSweep(cell, int(n), int(m), rhos, biases, scales, seeds_a, norms)
