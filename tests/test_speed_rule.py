"""The per-shape path rule of ``backward="auto"`` (issue 30) and the paths it chooses between.

Every path (``"auto"``, ``"closed_form"``, ``"autodiff"``, ``"stepwise"``) gives, in float64,
the gradients of JAX's autodiff of the sequential reference (``gated_jax.testing.plain_scan``)
with respect to the parameters, the inputs and ``z0``, on seeded random cases with biases,
``seq_lengths``, ``reverse`` and every structure of ``W_z``; the rule is deterministic and the
program ``gated_scan`` builds is the path the rule names; bfloat16 operands run in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax import cell
from gated_jax.cell import GatedParams, gated_scan, resolve_backward
from gated_jax.testing import max_rel_error, plain_scan

PATHS = ("auto", "closed_form", "autodiff", "stepwise")


def _case(seed: int, B: int, T: int, n: int, m: int, w_z: str):
    rng = np.random.default_rng(seed)
    wz = {
        "dense": rng.normal(size=(m, m)) * 0.7,
        "diagonal": rng.normal(size=(m,)),
        "heads": rng.normal(size=(2, m // 2, m // 2)),
        "none": None,
    }[w_z]
    p = GatedParams(
        rng.normal(size=(m, n)), rng.normal(size=(m, n)), wz, rng.normal(size=m), rng.normal(size=m)
    )
    p = jax.tree.map(jnp.asarray, p)
    xs = jnp.asarray(rng.normal(size=(B, T, n)))
    z0 = jnp.asarray(rng.normal(size=(B, m)))
    lengths = jnp.asarray(rng.integers(0, T + 1, size=B))
    ct = jnp.asarray(rng.normal(size=(B, T, m)))
    return p, xs, z0, lengths, ct


# the paths "auto" chooses between ("autodiff" is tested against the same reference in
# tests/test_cell.py; "auto" is one of these two, as the jaxpr test below shows)
PATHS_TESTED = ("closed_form", "stepwise")


@jax.jit(static_argnames=("reverse",))
def _vjps(p, xs, z0, lengths, ct, *, reverse):
    """Per path: the VJP of ``gated_scan`` w.r.t. (params, xs, z0), and the reference's; one
    compiled program per case."""
    ref = lambda p, x, z: plain_scan(p, x, z, seq_lengths=lengths, reverse=reverse)
    out = {"ref": jax.vjp(ref, p, xs, z0)[1](ct)}
    for path in PATHS_TESTED:
        f = lambda p, x, z, path=path: gated_scan(
            p, x, z, seq_lengths=lengths, reverse=reverse, backward=path
        )
        out[path] = jax.vjp(f, p, xs, z0)[1](ct)
    return out


# every W_z structure, reverse once; B m >= 2048 with m <= 64 is where "auto" picks "stepwise"
CASES = [
    (0, (512, 3, 3, 4), "dense", False),
    (2, (2, 5, 2, 4), "diagonal", True),
    (3, (3, 6, 2, 4), "heads", False),
    (4, (3, 4, 3, 2), "none", False),
]


@pytest.mark.parametrize(("seed", "shape", "w_z", "reverse"), CASES)
def test_every_path_matches_autodiff_of_the_reference(seed, shape, w_z, reverse):
    p, xs, z0, lengths, ct = _case(seed, *shape, w_z)
    vjps = _vjps(p, xs, z0, lengths, ct, reverse=reverse)
    for path in PATHS_TESTED:
        err = max_rel_error(vjps[path], vjps["ref"])
        assert err < 1e-11, (path, err)


@jax.jit
def _stepwise_options(p, xs, z0):
    """Forward mode, the final state and ``remat`` on the stepwise path, and the reference."""
    ref = lambda x: plain_scan(p, x, z0)
    f = lambda x, **k: gated_scan(p, x, z0, backward="stepwise", **k)
    loss = lambda zT: jnp.sum(jnp.sin(zT))
    return (
        jax.jacfwd(ref)(xs),
        jax.jacfwd(f)(xs),  # forward mode goes through (no custom VJP on this path)
        jax.grad(lambda x: loss(ref(x)[:, -1]))(xs),
        jax.grad(lambda x: loss(f(x, return_sequence=False)))(xs),
        jax.grad(lambda x: loss(f(x, remat=True)[:, -1]))(xs),
    )


def test_stepwise_remat_final_state_and_forward_mode():
    p, xs, z0, _, _ = _case(5, 3, 5, 2, 3, "dense")
    j_ref, j_fwd, g_ref, g_fin, g_rem = _stepwise_options(p, xs, z0)
    assert max_rel_error(j_fwd, j_ref) < 1e-12
    assert max_rel_error(g_fin, g_ref) < 1e-12 and max_rel_error(g_rem, g_ref) < 1e-12


def test_rule_is_a_fixed_function_of_shape_and_platform():
    # explicit paths pass through, whatever the shape
    for path in PATHS[1:]:
        assert resolve_backward(path, 64, 64, 16, 64, platform="cpu") == path
    seen = {
        resolve_backward("auto", B, T, n, m, platform="cpu")
        for B in (1, 8, 32, 128)
        for T in (32, 2048)
        for n, m in ((1, 64), (16, 16), (256, 256), (512, 512))
    }
    assert seen == {"closed_form", "stepwise"}  # both paths are reachable on CPU
    for B, T, n, m in [(128, 32, 16, 16), (32, 256, 64, 64), (1, 32, 1, 64), (8, 2048, 512, 512)]:
        cpu = resolve_backward("auto", B, T, n, m, platform="cpu")
        assert cpu == resolve_backward("auto", B, T, n, m, platform="cpu")  # deterministic
        # the memory options keep the blocked loop; unmeasured platforms the closed form
        assert resolve_backward("auto", B, T, n, m, remat=True, platform="cpu") == "closed_form"
        kw = dict(return_sequence=False, platform="cpu")
        assert resolve_backward("auto", B, T, n, m, **kw) == "closed_form"
        assert resolve_backward("auto", B, T, n, m, platform="gpu") == "closed_form"
    with pytest.raises(ValueError, match="`backward` \\(='fast'\\) must be"):
        resolve_backward("fast", 1, 1, 1, 1)


@pytest.mark.parametrize("shape", [(512, 3, 3, 4), (2, 5, 3, 4)])
def test_gated_scan_runs_the_path_the_rule_names(shape):
    B, T, n, m = shape
    p, xs, _, _, _ = _case(6, B, T, n, m, "dense")
    path = resolve_backward("auto", B, T, n, m)
    text = str(jax.make_jaxpr(lambda p: gated_scan(p, xs))(p))
    # the closed form is a custom VJP; the stepwise path is JAX's own transpose of the loop
    assert ("custom_vjp_call" in text) == (path == "closed_form"), path


def test_gated_rnn_auto_matches_nn_rnn():
    import flax.linen as nn

    from gated_jax.nn import GatedCell, GatedRNN

    B, T, n, m = 512, 3, 3, 4
    xs = jnp.asarray(np.random.default_rng(7).normal(size=(B, T, n)))
    c64 = lambda: GatedCell(m, param_dtype=jnp.float64)  # float64 parameters and carry
    v = nn.RNN(c64()).init(jax.random.key(0), xs)
    loss = lambda mod: jax.grad(lambda q, x: jnp.sum(jnp.tanh(mod.apply(q, x))), (0, 1))
    ref = jax.jit(loss(nn.RNN(c64())))(v, xs)
    assert resolve_backward("auto", B, T, n, m, platform="cpu") == "stepwise"
    got = jax.jit(loss(GatedRNN(c64(), backward="auto")))(v, xs)
    assert max_rel_error(got, ref) < 1e-12


@jax.jit
def _bf16_and_f32(p16, x16):
    """Per path: states and gradients with bfloat16 operands, and the float32 computation on
    the same values with its result rounded once to bfloat16."""
    p32, x32 = jax.tree.map(lambda a: a.astype(jnp.float32), (p16, x16))
    out = {}
    for path in ("closed_form", "stepwise"):
        f = lambda p, x, path=path: gated_scan(p, x, backward=path)
        loss = lambda p, x, f=f: jnp.sum(f(p, x).astype(jnp.bfloat16).astype(jnp.float32) ** 2)
        out[path] = (
            f(p16, x16),
            f(p32, x32).astype(jnp.bfloat16),
            jax.grad(loss, (0, 1))(p16, x16),
            jax.grad(loss, (0, 1))(p32, x32),
        )
    return out


def test_bfloat16_runs_in_float32():
    """bfloat16 operands: projections, recurrence and accumulations in float32, the result
    (and each gradient) rounded once to bfloat16, on either path."""
    p, xs, _, _, _ = _case(8, 32, 6, 3, 4, "dense")
    p16, x16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (p, xs))
    for path, (zs, zs32, g16, g32) in _bf16_and_f32(p16, x16).items():
        assert zs.dtype == jnp.bfloat16 and np.array_equal(np.asarray(zs), np.asarray(zs32))
        assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(g16)), path
        # the same float32 computation, rounded once: within bfloat16's half-ulp of it
        g16 = jax.tree.map(lambda a: a.astype(jnp.float32), g16)
        assert max_rel_error(g16, g32) < 2**-8, path


def test_backwards_lists_auto():
    assert cell.BACKWARDS[0] == "auto"
