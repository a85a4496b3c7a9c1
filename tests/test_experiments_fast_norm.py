"""The batch-friendly spectral norm (``norm="power"``) against the SVD path (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax.experiments import FAMILIES, flow_sweep, random_bases
from gated_jax.experiments.baselines import resolve_norm, reverse_products, spectral_norms
from gated_jax.experiments.flow import config_flow_fn

_power = jax.jit(lambda a: spectral_norms(a, norm="power"))


def _svd_with_spectrum(rng, sigmas, shape):
    a, b = shape
    u, _ = np.linalg.qr(rng.standard_normal((a, a)))
    v, _ = np.linalg.qr(rng.standard_normal((b, b)))
    s = np.zeros((a, b))
    s[np.arange(len(sigmas)), np.arange(len(sigmas))] = sigmas
    return u @ s @ v.T


def _rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want) / want))


def test_power_norm_matches_numpy_svd_on_random_matrices():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 3), (5, 2), (2, 7), (16, 16), (32, 32)]:
        a = rng.standard_normal((3, 200, *shape))
        a *= np.array([1e-60, 1.0, 1e60])[:, None, None, None]  # no under/overflow in the Gram
        want = np.linalg.norm(a, 2, axis=(-2, -1))
        assert _rel(_power(jnp.asarray(a)), want) <= 1e-12, shape


def test_power_norm_on_clustered_and_repeated_top_singular_values():
    """Hard cases for a power method: near-ties of every size and exact multiplicities."""
    rng = np.random.default_rng(1)
    mats, want = [], []
    for gap in (0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-2, 0.3):
        for mult in (1, 2, 5):
            sig = np.concatenate([np.ones(mult), (1 - gap) * np.ones(2), rng.uniform(0, 0.9, 9)])
            mats.append(3.0 * _svd_with_spectrum(rng, sig, (16, 16)))
            want.append(3.0)
    mats.append(np.eye(16))  # lag 0
    want.append(1.0)
    got = _power(jnp.asarray(np.stack(mats)))
    assert _rel(got, np.array(want)) <= 1e-12
    np.testing.assert_array_equal(np.asarray(_power(jnp.zeros((2, 4, 4)))), 0.0)


def test_power_norm_float32_close_to_float64_svd():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((100, 8, 8)) * np.exp(rng.uniform(-20, 20, (100, 1, 1)))
    got = spectral_norms(jnp.asarray(a, jnp.float32), norm="power")
    assert got.dtype == jnp.float32
    assert _rel(got, np.linalg.norm(a, 2, axis=(-2, -1))) <= 2e-5


def test_power_norm_under_vmap_equals_batched_call():
    a = jnp.asarray(np.random.default_rng(3).standard_normal((6, 5, 4, 4)))
    got = jax.jit(jax.vmap(lambda x: spectral_norms(x, norm="power")))(a)
    np.testing.assert_allclose(np.asarray(got), np.asarray(_power(a)), rtol=1e-13)


def test_reverse_products_are_the_jacobian_chain():
    jacs = np.random.default_rng(4).standard_normal((5, 3, 3))
    prods = np.asarray(reverse_products(jnp.asarray(jacs)))
    for k in range(6):
        want = np.eye(3)
        for t in range(4, k - 1, -1):  # J[T] ... J[k+1]; jacs[t] is J[t+1]
            want = want @ jacs[t]
        np.testing.assert_allclose(prods[k], want, rtol=1e-12, atol=1e-14)


_KW = dict(
    wz_norms=(0.25, 1.0, 4.0, 16.0),
    gate_biases=(-2.0, 2.0),
    input_scales=(0.5, 2.0),
    lengths=(24,),
    seeds=(0, 1),
    n=3,
    m=6,
    progress=False,
)


@pytest.mark.parametrize("cell", ["gated", "tanh", "lstm"])
def test_power_sweep_equals_svd_sweep_and_growth_rates(cell):
    svd = flow_sweep(cell, norm="svd", **_KW)
    power = flow_sweep(cell, norm="power", **_KW)
    a, b = svd.norms[24], power.norms[24]
    assert np.all(np.isfinite(a)) and a.min() > 0
    assert _rel(b, a) <= 1e-10
    np.testing.assert_allclose(power.growth_rate(24), svd.growth_rate(24), rtol=0, atol=1e-12)
    # chunked (padded last chunk) gives the same numbers
    chunked = flow_sweep(cell, norm="power", chunk_size=5, **_KW)
    np.testing.assert_allclose(chunked.norms[24], b, rtol=1e-13)


def test_power_sweep_float32_close():
    kw = dict(_KW, wz_norms=(0.5, 4.0), seeds=(0,))
    a = flow_sweep("gated", norm="svd", **kw)
    b = flow_sweep("gated", norm="power", dtype=jnp.float32, **kw)
    assert b.norms[24].dtype == np.float32
    np.testing.assert_allclose(b.norms[24], a.norms[24], rtol=1e-3)


def test_config_flow_fn_power_matches_gated_svd_per_config():
    bases = random_bases([7], n=3, m=5, length=10)
    args = (bases, np.int32(0), np.float64(6.0), np.float64(0.5), np.float64(1.5))
    svd = jax.jit(config_flow_fn("gated", length=10, m=5))(*args)
    power = jax.jit(config_flow_fn("gated", length=10, m=5, norm="power"))(*args)
    assert _rel(power, svd) <= 1e-12
    np.testing.assert_allclose(np.asarray(svd)[0], 1.0, rtol=1e-15)  # lag 0 is the identity
    fam = FAMILIES["gated"]  # the family's own flow takes the method too
    base = {k: jax.numpy.asarray(v[0]) for k, v in bases.items()}
    params = fam.init(base, jnp.float64(6.0), jnp.float64(0.5))
    direct = jax.jit(lambda p, x: fam.flow(p, x, jnp.zeros(5), norm="power"))(
        params, 1.5 * base["xs"]
    )[::-1]
    np.testing.assert_allclose(np.asarray(direct), np.asarray(power), rtol=1e-13)


def test_auto_norm_is_svd_on_cpu_and_power_on_accelerators():
    assert resolve_norm("auto", "cpu") == "svd"
    assert resolve_norm("auto", "cpu", num_devices=2) == "power"  # sharded LAPACK calls stall
    assert resolve_norm("auto", "gpu") == resolve_norm("auto", "tpu") == "power"
    assert resolve_norm("svd", "gpu") == "svd" and resolve_norm("power", "cpu") == "power"
    with pytest.raises(ValueError, match="`norm`"):
        resolve_norm("fast", "cpu")
    # flow_sweep's default is "auto" (spectral_norms takes it too), resolved on the platform
    kw = dict(_KW, wz_norms=(0.5, 4.0), seeds=(0,))
    here = resolve_norm("auto", num_devices=len(jax.devices()))
    np.testing.assert_array_equal(
        flow_sweep("gated", **kw).norms[24], flow_sweep("gated", norm=here, **kw).norms[24]
    )
    mats = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4, 4)))
    np.testing.assert_array_equal(
        spectral_norms(mats, norm="auto"), spectral_norms(mats, norm=here)
    )


@pytest.mark.parametrize("bad", ["lanczos", None, 2])
def test_bad_norm_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="`norm`"):
        flow_sweep("gated", lengths=(3,), norm=bad, progress=False)
    with pytest.raises(ValueError, match="`norm`"):
        spectral_norms(jnp.eye(2), norm=bad)
    with pytest.raises(ValueError, match="`norm`"):
        config_flow_fn("tanh", length=3, m=2, norm=bad)


# The power method sharded over four CPU devices (equal to one device), and the refusal of an
# explicit norm="svd" there, run in tests/test_distributed.py's four-device process
# (one JAX start-up for the multi-process and the multi-device checks).
