"""The sequential recurrence's memory-lean paths: the default closed form (states and gate
kept), ``remat`` and the final-state path (``return_sequence=False``), against JAX autodiff of
the plain scan in float64, and their compiled memory (deterministic: ``memory_analysis``)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax import cell
from gated_jax.lab._harness import compile_stats
from gated_jax.lab.cell import lean_scan
from gated_jax.testing import max_rel_error, plain_scan

TOL = 1e-10


class Config(NamedTuple):
    B: int
    T: int
    n: int
    m: int
    bias: bool
    reverse: bool
    lengths: bool
    remat: bool | int

    def __str__(self) -> str:
        flags = [
            "bias" if self.bias else "",
            "rev" if self.reverse else "",
            "len" if self.lengths else "",
            f"remat={self.remat}" if self.remat is not False else "",
        ]
        return f"B{self.B}-T{self.T}-n{self.n}-m{self.m}" + "".join(f"-{f}" for f in flags if f)


# lengths on both sides of the block boundaries: the default path's blocks are
# max(64, ceil(T/16)) steps, or fewer where a (K, B, m) block would pass 1 MiB; sqrt(T) for
# remat and the final state; with a shorter tail
CONFIGS = [
    Config(2, 1, 3, 4, False, False, False, False),
    Config(2, 63, 3, 4, True, False, True, False),
    Config(3, 65, 2, 3, True, True, True, False),
    Config(2, 130, 3, 2, False, True, False, False),
    Config(1, 1100, 2, 3, True, False, True, False),  # 16 blocks of 69 and a tail of 4
    Config(2, 50, 3, 4, True, False, True, True),  # K = 7, tail 1
    Config(2, 50, 3, 4, True, True, True, 8),  # K = 8, tail 2
    Config(2, 9, 3, 4, False, True, False, 20),  # K > T: one block
    Config(4, 120, 2, 600, True, False, True, False),  # 1 MiB / (4 * 600 * 8 B): K = 54, tail 12
]


def _case(cfg: Config, seed: int):
    rng = np.random.default_rng(seed)
    n, m = cfg.n, cfg.m
    shapes = [(m, n), (m, n), (m, m)] + ([(m,), (m,)] if cfg.bias else [])
    scale = [1.0, 1.0, 0.9 / np.sqrt(m), 0.5, 0.5][: len(shapes)]
    p = cell.GatedParams(
        *[jnp.asarray(s * rng.normal(size=sh)) for s, sh in zip(scale, shapes, strict=True)]
    )
    xs = jnp.asarray(rng.normal(size=(cfg.B, cfg.T, n)))
    z0 = jnp.asarray(rng.normal(size=(cfg.B, m)))
    lengths = jnp.asarray(rng.integers(0, cfg.T + 1, size=cfg.B)) if cfg.lengths else None
    ct = jnp.asarray(rng.normal(size=(cfg.B, cfg.T, m)))
    return p, xs, z0, lengths, ct


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@functools.partial(jax.jit, static_argnames=("cfg",))
def _paths(p, xs, z0, L, ct, *, cfg):
    """Every path's values and VJPs and the plain scan's, in one compiled program per config."""
    kw = dict(seq_lengths=L, reverse=cfg.reverse)
    ref, vjp_ref = jax.vjp(lambda *a: plain_scan(*a, **kw), p, xs, z0)
    zs, vjp = jax.vjp(lambda *a: cell.gated_scan(*a, remat=cfg.remat, **kw), p, xs, z0)
    # the final state alone. The VJP of ``f(...)[:, idx]`` at ``ct_last`` is the VJP of ``f`` at
    # the cotangent that is ``ct_last`` at ``idx`` and zero elsewhere: the full path's and the
    # plain scan's VJPs are reused at that cotangent (not traced and compiled a second time)
    idx = 0 if cfg.reverse else -1
    ct_last = ct[:, idx]
    ct_only_last = jnp.zeros_like(ct).at[:, idx].set(ct_last)
    last, vjp_last = jax.vjp(
        lambda *a: cell.gated_scan(*a, remat=cfg.remat, return_sequence=False, **kw), p, xs, z0
    )
    out = dict(ref=ref, g_ref=vjp_ref(ct), zs=zs, g=vjp(ct), last=last, g_last=vjp_last(ct_last))
    out.update(g_full_last=vjp(ct_only_last), g_ref_last=vjp_ref(ct_only_last))
    if cfg in CONFIGS[:5]:
        # the exposed closed form (no remat option) on the first five structures, against the
        # same autodiff reference (it was a test of its own, recomputing that reference)
        out["bptt"] = cell.gated_bptt(p, xs, z0, ct, **kw)
    return out


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_paths_match_autodiff_of_the_plain_scan(cfg):
    p, xs, z0, L, ct = _case(cfg, 11)
    r = _paths(p, xs, z0, L, ct, cfg=cfg)
    assert max_rel_error(r["zs"], r["ref"]) < TOL
    assert max_rel_error(r["g"], r["g_ref"]) < TOL
    idx = 0 if cfg.reverse else -1
    assert r["last"].shape == (cfg.B, cfg.m)
    assert max_rel_error(r["last"], r["ref"][:, idx]) < TOL
    assert max_rel_error(r["g_last"], r["g_full_last"]) < TOL
    assert max_rel_error(r["g_last"], r["g_ref_last"]) < TOL
    if cfg in CONFIGS[:5]:
        assert max_rel_error(r["bptt"], r["g_ref"]) < TOL


def test_final_state_under_jit_vmap_jacrev_and_batch_dims():
    cfg = Config(2, 40, 3, 4, True, False, False, False)
    p, xs, z0, _, _ = _case(cfg, 13)

    def last(p, x, z):
        return cell.gated_scan(p, x, z, return_sequence=False)

    def ref(p, x, z):
        return plain_scan(p, x[None], z[None])[0, -1]

    # vmap over the batch of one-sequence calls, under jit
    got = jax.jit(jax.vmap(last, in_axes=(None, 0, 0)))(p, xs, z0)
    assert max_rel_error(got, jax.jit(jax.vmap(ref, in_axes=(None, 0, 0)))(p, xs, z0)) < TOL
    # jacrev of the final state with respect to every parameter (each one compiled program)
    J = jax.jit(jax.jacrev(last))(p, xs[0], z0[0])
    J_ref = jax.jit(jax.jacrev(ref))(p, xs[0], z0[0])
    assert max_rel_error(J, J_ref) < TOL
    # two batch dims in, the batch shape and m out
    xb = jnp.reshape(jnp.concatenate([xs, xs]), (2, 2, 40, 3))
    assert cell.gated_scan(p, xb, return_sequence=False).shape == (2, 2, 4)
    # T = 0: the initial state
    assert max_rel_error(last(p, xs[:, :0], z0), z0) == 0.0


def test_final_state_bfloat16_and_float32_follow_the_full_path():
    p = cell.init_gated_params(jax.random.key(0), 3, 4, dtype=jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (2, 30, 3), jnp.float32)
    full = cell.gated_scan(p, xs)[:, -1]
    assert max_rel_error(cell.gated_scan(p, xs, return_sequence=False), full) < 1e-5
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p)
    out = cell.gated_scan(pb, xs.astype(jnp.bfloat16), return_sequence=False)
    assert out.dtype == jnp.bfloat16
    assert max_rel_error(out, full) < 2e-2
    g = jax.grad(lambda q: jnp.sum(cell.gated_scan(q, xs, return_sequence=False)))(pb)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(g))


def test_return_sequence_is_validated():
    p = cell.init_gated_params(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="return_sequence"):
        cell.gated_scan(p, jnp.ones((2, 5, 3)), return_sequence="no")


def _temp(loss, p, B, T, n):
    return compile_stats(jax.grad(loss), p, jax.ShapeDtypeStruct((B, T, n), p.w_x.dtype)).temp_bytes


def test_final_state_memory_grows_as_sqrt_T_and_stores_nothing_T_long():
    with jax.enable_x64(False):
        p = cell.init_gated_params(jax.random.key(0), 8, 8)

        def loss(p, x):
            return jnp.sum(cell.gated_scan(p, x, return_sequence=False) ** 2)

        small, large = _temp(loss, p, 1, 1_000, 8), _temp(loss, p, 1, 100_000, 8)
        # 100x the steps: sqrt(100) = 10x the memory at most (with slack for fixed buffers)
        assert large < 12 * small
        # less than ONE array of all the states (T x m float32)
        assert large < 100_000 * 8 * 4 / 4


def test_default_keeps_under_0_6x_the_lean_scans_memory():
    with jax.enable_x64(False):
        p = cell.init_gated_params(jax.random.key(0), 32, 32)

        def mean_sq(f):
            return lambda p, x: jnp.mean(f(p, x) ** 2)

        lean = _temp(mean_sq(lean_scan), p, 8, 1024, 32)
        default = _temp(mean_sq(cell.gated_scan), p, 8, 1024, 32)
        remat = _temp(mean_sq(lambda p, x: cell.gated_scan(p, x, remat=True)), p, 8, 1024, 32)
        assert default <= 0.6 * lean
        assert remat < default


def test_lean_scan_is_the_cell():
    p = cell.init_gated_params(jax.random.key(0), 3, 4, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (2, 7, 3), jnp.float64)
    assert max_rel_error(lean_scan(p, xs), plain_scan(p, xs)) < 1e-13
