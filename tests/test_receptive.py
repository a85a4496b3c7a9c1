"""receptive_field_of: the structural gradient support of any model.

On random plain stacks it equals the analytic rule (``receptive_field``'s span, and inside
it the Minkowski sum of the layers' taps, written out here); on a ResNet-style Flax block
with a skip connection it is the union of the two paths' sets, which neither path's stack
formula gives alone; it always contains the support of ``jax.grad`` at a random point.
"""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gated_jax as gj


def taps(layers):
    """Input offsets (from start + i * jump) one output reads: the Minkowski sum of taps."""
    offsets, jump = {0}, 1
    for k, s, d in layers:
        offsets = {o + t * d * jump for o in offsets for t in range(k)}
        jump *= s
    return offsets


def stack_fn(layers, weights, pool):
    def f(x):
        for (k, s, d), w, p in zip(layers, weights, pool, strict=True):
            if p == "max":
                x = lax.reduce_window(
                    x, -jnp.inf, lax.max, (1, 1, k), (1, 1, s), "VALID", window_dilation=(1, 1, d)
                )
            else:
                x = lax.conv_general_dilated(x, w, (s,), "VALID", rhs_dilation=(d,))
            x = jax.nn.relu(x)
        return x

    return f


def test_equals_the_analytic_rule_on_random_plain_stacks():
    rng, nrng = random.Random(0), np.random.default_rng(0)
    checked = 0
    for _ in range(10):
        depth = rng.randint(1, 3)
        layers = [(rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 2)) for _ in range(depth)]
        pool = [rng.choice(["conv", "conv", "max"]) for _ in layers]
        weights = [nrng.standard_normal((1, 1, k)) for k, _, _ in layers]
        weights[0][0, 0, 0] = 0.0  # a zero weight: structurally still a path
        h = 24
        f = stack_fn(layers, weights, pool)
        out = jax.eval_shape(f, jax.ShapeDtypeStruct((1, 1, h), jnp.float64)).shape[-1]
        if out < 1:
            continue
        rf = gj.receptive_field([gj.ConvLayer(k, s, d) for k, s, d in layers])
        for i in sorted({0, out // 2, out - 1}):
            got = gj.receptive_field_of(f, (1, 1, h), (0, 0, i))[0, 0]
            base = rf.start[0] + i * rf.jump[0]
            want = np.zeros(h, bool)
            want[[base + o for o in taps(layers)]] = True
            np.testing.assert_array_equal(got, want, err_msg=str((layers, pool, i)))
            span = np.zeros(h, bool)
            span[base : base + rf.size[0]] = True
            assert not (got & ~span).any()
            if len(taps(layers)) == rf.size[0]:  # no holes: the span itself
                np.testing.assert_array_equal(got, span)
            checked += 1
    assert checked >= 20


class Block:
    """A ResNet-style block: two dilated convs, a 2-tap skip conv, ReLU, max-pool."""

    @staticmethod
    def make():
        import flax.linen as nn

        class ResBlock(nn.Module):
            @nn.compact
            def __call__(self, x):
                h = nn.relu(nn.Conv(3, (3,), kernel_dilation=3, padding="SAME")(x))
                h = nn.Conv(3, (3,), kernel_dilation=3, padding="SAME")(h)
                y = nn.relu(h + nn.Conv(3, (2,), padding="SAME")(x))
                return nn.max_pool(y, (2,), strides=(2,))

        return ResBlock()


def test_resnet_block_with_a_skip_connection_is_the_union_of_its_paths():
    model = Block.make()
    h = 24
    got = gj.receptive_field_of(model, (1, h, 2), (0, 5, 0))
    assert got.all(axis=-1).tolist() == got.any(axis=-1).tolist()  # every channel alike
    reached = set(np.nonzero(got[0, :, 0])[0].tolist())
    pooled = {10, 11}  # max_pool (2,) stride 2: output 5 reads positions 10 and 11
    # main path: two 3-tap convs at dilation 3 ('SAME': lo = 3 each); skip: 2 taps ('SAME': lo 0)
    main = {p + o - 6 for p in pooled for o in taps([(3, 1, 3), (3, 1, 3)])}
    skip = {p + o for p in pooled for o in taps([(2, 1, 1)])}
    assert reached == (main | skip) & set(range(h))
    assert reached != main and reached != skip
    assert main == {4, 5, 7, 8, 10, 11, 13, 14, 16, 17} and 12 in skip - main
    # the plain-stack formula along the main path alone misses the skip's position
    rf = gj.receptive_field([gj.ConvLayer(3, 1, 3, 3), gj.ConvLayer(3, 1, 3, 3), (2, 2)])
    assert rf.size == (14,) and rf.start[0] + 5 * rf.jump[0] == 4
    # jax.grad at a random point: contained in the structural set (ReLU / max may hide some)
    variables = model.init(jax.random.key(0), jnp.ones((1, h, 2)))
    x = jax.random.normal(jax.random.key(1), (1, h, 2))
    g = jax.grad(lambda x: model.apply(variables, x)[0, 5, 0])(x)
    assert not ((np.abs(np.asarray(g)) > 0) & ~got).any()
    # near the edge the 'SAME' padding clips the set to the input
    edge = gj.receptive_field_of(model, (1, h, 2), (0, 0, 0))[0, :, 0]
    want = {p + o - 6 for p in {0, 1} for o in taps([(3, 1, 3), (3, 1, 3)])} | {0, 1, 2}
    assert set(np.nonzero(edge)[0].tolist()) == want & set(range(h))


def test_linear_models_match_jax_grad_and_bad_indices_are_refused():
    w = np.random.default_rng(2).standard_normal((2, 2, 3, 3))

    def f(x):  # 2-D conv, stride 2, then a global sum over one axis
        y = lax.conv_general_dilated(x, w, (2, 1), ((1, 1), (0, 0)))
        return y.sum(axis=2)

    got = gj.receptive_field_of(f, (1, 2, 9, 7), (0, 1, 2))
    x = np.random.default_rng(3).standard_normal((1, 2, 9, 7))
    g = jax.grad(lambda x: f(x)[0, 1, 2])(x)
    np.testing.assert_array_equal(got, np.abs(np.asarray(g)) > 0)
    assert gj.receptive_field_of(lambda x: x.max(), (5,), ()).all()
    with pytest.raises(ValueError, match=r"^`output_index` \(="):
        gj.receptive_field_of(f, (1, 2, 9, 7), (0, 2, 2))
    with pytest.raises(ValueError, match=r"^`output_index` \(="):
        gj.receptive_field_of(f, (1, 2, 9, 7), 10**6)


# data-dependent selections: the set every perturbation can reach, whatever the seed

DATA_DEPENDENT = {
    "sort": (lambda x: jnp.sort(x, axis=-1), (3, 6), (1, 2)),
    "top_k": (lambda x: lax.top_k(x, 2)[0], (3, 6), (1, 0)),
    "median": (lambda x: jnp.median(x, axis=-1), (3, 6), (1,)),
    "x[argsort(x)]": (lambda x: x[jnp.argsort(x)], (6,), (2,)),
    "x[argmax(x)]": (lambda x: x[jnp.argmax(x)], (6,), ()),
    "take_along_axis(argmax)": (
        lambda x: jnp.take_along_axis(x, jnp.argmax(x, axis=1)[:, None], axis=1)[:, 0],
        (3, 5),
        (1,),
    ),
    "cond": (
        lambda x: lax.cond(x[0] > 1.0, lambda y: y[1] * 2.0, lambda y: y[2] + 1.0, x),
        (6,),
        (),
    ),
    "where on another entry": (lambda x: jnp.where(x[3] > 1.0, x[0], x[1]), (5,), ()),
}


def brute_force_support(f, shape, index, points=4):
    """Input entries whose perturbation (small and large, both signs) changes ``f(x)[index]``
    at some of a few random points: a lower bound of the structural dependency."""
    f = jax.jit(f)
    found = np.zeros(shape, bool)
    rng = np.random.default_rng(1)
    for _ in range(points):
        x = rng.uniform(0.0, 2.0, shape)
        y = np.asarray(f(x))[index]
        for j in np.ndindex(shape):
            for delta in (1e-3, -1e-3, 0.7, -0.7, 5.0, -5.0):
                z = x.copy()
                z[j] += delta
                if np.asarray(f(z))[index] != y:
                    found[j] = True
                    break
    return found


@pytest.mark.parametrize("name", list(DATA_DEPENDENT))
def test_data_dependent_selections_are_complete_and_seed_independent(name):
    """``jnp.sort``, ``lax.top_k``, ``jnp.median``, indexing by ``argsort`` / ``argmax`` and
    ``lax.cond``: every position a perturbation reaches is in the set, for every seed."""
    f, shape, index = DATA_DEPENDENT[name]
    sets = [gj.receptive_field_of(f, shape, index, seed=s) for s in range(3)]
    for s in sets[1:]:
        np.testing.assert_array_equal(s, sets[0])
    brute = brute_force_support(f, shape, index)
    assert not (brute & ~sets[0]).any(), (name, sets[0].astype(int), brute.astype(int))
    if name != "take_along_axis(argmax)":  # conservative there: every row of the gather
        np.testing.assert_array_equal(sets[0], brute, err_msg=name)


def test_a_float_in_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"^`input_shape` \(=\(2\.0, 3\)\) must be"):
        gj.receptive_field_of(lambda x: x, (2.0, 3), (0, 0))
