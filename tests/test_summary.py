"""gated_jax.summary: rows, parameter counts, XLA FLOPs, receptive fields, warnings, errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import gated_jax as gj


def _same(n: int, k: int, s: int = 1, d: int = 1) -> tuple[int, int]:
    """Flax's / lax's SAME padding of one dim."""
    return tuple(lax.padtype_to_pads((n,), ((k - 1) * d + 1,), (s,), "SAME")[0])  # type: ignore[return-value]


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Conv(4, (3, 3), padding="SAME", name="c1")(x)
        z = nn.Conv(4, (3, 3), padding="SAME", name="c2")(nn.relu(y))
        y = nn.max_pool(y + z, (2, 2), (2, 2))  # the skip, then pooling
        y = nn.Conv(4, (3, 3), strides=(2, 2), padding="SAME", name="c3")(y)
        return nn.Dense(3, name="head")(y.reshape(y.shape[0], -1))


@pytest.fixture(scope="module")
def linen_case():
    model, x = LinenCNN(), jnp.ones((1, 12, 12, 1), jnp.float32)
    return model, model.init(jax.random.key(0), x), gj.summary(model, x)


def test_linen_rows_params_and_flops(linen_case):
    _, variables, s = linen_case
    assert [r.path for r in s.rows] == ["c1", "c2", "pool_0", "c3", "head"]
    assert [r.kind for r in s.rows] == ["Conv", "Conv", "max_pool", "Conv", "Dense"]
    assert [r.output_shape for r in s.rows] == [
        (1, 12, 12, 4), (1, 12, 12, 4), (1, 6, 6, 4), (1, 3, 3, 4), (1, 3)
    ]  # fmt: skip
    params = variables["params"]
    size = lambda t: sum(a.size for a in jax.tree.leaves(t))  # noqa: E731
    for r in s.rows:
        assert r.params == (size(params[r.path]) if r.path in params else 0)
        assert r.flops > 0 and r.backward_flops > 0 and r.bytes_accessed > 0
    assert s.params == size(params) and s.output_shape == (1, 3)
    assert s.flops > 0 and s.backward_flops > s.flops


def test_linen_receptive_fields_match_the_stack_rule(linen_case):
    _, _, s = linen_case
    rows = {r.path: r for r in s.rows}
    c1, c2 = gj.ConvLayer(3, 1, 1, (1, 1)), gj.ConvLayer(3, 1, 1, (1, 1))
    c3 = gj.ConvLayer(3, 2, 1, _same(6, 3, 2))
    stacks = {"c1": [c1], "c2": [c1, c2], "pool_0": [c1, c2, (2, 2)], "c3": [c1, c2, (2, 2), c3]}
    for path, layers in stacks.items():
        rf = gj.receptive_field(layers)
        rf2 = gj.ReceptiveField(rf.size * 2, rf.jump * 2, rf.start * 2)
        assert (rows[path].rf_size, rows[path].rf_jump, rows[path].rf_start) == tuple(rf2), path
    assert rows["head"].rf_size is None
    assert any("asymmetric SAME padding (0, 1)" in w for w in rows["c3"].warnings)
    text = str(s)
    for r in s.rows:
        assert r.path in text and "x".join(map(str, r.output_shape)) in text
    assert "10x10" in text and "total" in text


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(4, 4, (3, 3), padding="VALID", use_bias=False, rngs=rngs)
        self.head = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):
        y = nnx.avg_pool(nnx.relu(self.conv(x)), (2, 2), (2, 2))
        y = self.conv2(y)
        return self.head(y.reshape(y.shape[0], -1))


def test_nnx_rows_params_flops_and_fields():
    model = NnxCNN(nnx.Rngs(0))
    s = gj.summary(model, jnp.ones((1, 12, 12, 1), jnp.float32))
    assert [r.path for r in s.rows] == ["conv", "pool_0", "conv2", "head"]
    size = lambda m: sum(a.size for a in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    assert [r.params for r in s.rows] == [size(model.conv), 0, size(model.conv2), size(model.head)]
    assert s.params == size(model)
    # the bias-free VALID conv: XLA counts 2 K Cin Cout per output position
    conv2 = s.rows[2]
    assert conv2.output_shape == (1, 4, 4, 4)
    assert conv2.flops == 2 * 9 * 4 * 4 * (4 * 4)
    rf = gj.receptive_field([gj.ConvLayer(3, 1, 1, (1, 1)), (2, 2), 3])
    assert (conv2.rf_size, conv2.rf_jump, conv2.rf_start) == (
        rf.size * 2,
        rf.jump * 2,
        rf.start * 2,
    )


def test_function_rows_flops_params_and_warnings():
    rng = np.random.default_rng(0)
    w1 = jnp.asarray(rng.normal(size=(3, 3, 2, 5)), jnp.float32)  # HWIO
    w2 = jnp.asarray(rng.normal(size=(3, 3, 5, 4)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")

    def f(dense, x):
        y = lax.conv_general_dilated(x, w1, (2, 2), "VALID", dimension_numbers=dn)  # 10 -> 4
        y = lax.conv_general_dilated(y, w2, (1, 1), "SAME", dimension_numbers=dn)
        return y.reshape(1, -1) @ dense

    dense = jnp.ones((64, 7), jnp.float32)
    s = gj.summary(f, dense, jnp.ones((1, 10, 10, 2), jnp.float32), wrt=1)
    kinds = [r.kind for r in s.rows]
    assert kinds == ["conv_general_dilated", "conv_general_dilated", "dot_general"]
    r1, r2, r3 = s.rows
    assert r1.flops == 2 * 9 * 2 * 5 * (4 * 4)  # VALID: every tap counted
    # SAME: XLA counts only the taps inside the input (per dim, 4*3 - 2 = 10 of 12)
    assert r2.flops == 2 * 5 * 4 * (10 * 10)
    assert r3.flops == 2 * 64 * 7 and r3.params == 64 * 7  # the other input is a parameter
    assert (r1.params, r2.params) == (w1.size, w2.size)  # closed-over weights
    assert (r1.rf_size, r1.rf_jump, r1.rf_start) == ((3, 3), (2, 2), (0, 0))
    assert (r2.rf_size, r2.rf_jump, r2.rf_start) == ((7, 7), (2, 2), (-2, -2))
    assert any("row(s) (9) covered by no window" in w for w in r1.warnings)
    assert r3.rf_size is None and r2.backward_flops > r2.flops


class ConvRNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        from gated_jax import nn as gnn

        x = gnn.GatedRNN(5, name="rnn")(nn.Conv(4, (3,), padding="SAME", name="conv")(x))
        return nn.Dense(2, name="head")(x[:, -1])


def test_a_conv_front_end_with_gated_rnn_is_one_row_per_layer():
    model, x = ConvRNN(), jnp.ones((1, 9, 2), jnp.float32)
    params = model.init(jax.random.key(0), x)["params"]
    s = gj.summary(model, x, costs=False)
    assert [(r.path, r.kind) for r in s.rows] == [
        ("conv", "Conv"), ("rnn", "GatedRNN"), ("head", "Dense")
    ]  # fmt: skip
    sizes = [sum(a.size for a in jax.tree.leaves(params[r.path])) for r in s.rows]
    assert [r.params for r in s.rows] == sizes and s.params == sum(sizes)
    assert (s.rows[0].rf_size, s.rows[0].rf_jump, s.rows[0].rf_start) == ((3,), (1,), (-1,))
    assert s.rows[1].output_shape == (1, 9, 5) and s.rows[1].rf_size is None


def test_a_field_wider_than_the_input_is_flagged():
    dn = ("NHWC", "HWIO", "NHWC")
    w1, w2 = jnp.ones((5, 5, 1, 2), jnp.float32), jnp.ones((5, 5, 2, 2), jnp.float32)

    def f(x):
        y = lax.conv_general_dilated(x, w1, (2, 2), "SAME", dimension_numbers=dn)
        return lax.conv_general_dilated(y, w2, (2, 2), "SAME", dimension_numbers=dn)

    r = gj.summary(f, jnp.ones((1, 8, 8, 1), jnp.float32), costs=False).rows[1]
    true = gj.receptive_field([gj.ConvLayer(5, 2, 1, _same(8, 5, 2)), (5, 2, 1, _same(4, 5, 2))])
    assert (r.rf_jump, r.rf_start) == (true.jump * 2, true.start * 2) == ((4, 4), (-3, -3))
    assert r.rf_size[0] <= true.size[0] == 13  # only a lower bound: every output reads row 7
    assert any("the field is at least" in w for w in r.warnings)


class RandomNet(nn.Module):
    """conv -> (conv, skip) -> pooling -> strided conv, drawn from a seed."""

    k1: int
    d1: int
    k2: int
    pool: tuple[int, int, str]
    k3: int
    s3: int
    p3: str

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(2, (self.k1, self.k1), kernel_dilation=self.d1, padding="SAME", name="a")(x)
        y = y + nn.Conv(2, (self.k2, self.k2), padding="SAME", name="b")(y)
        win, stride, kind = self.pool
        y = (nn.max_pool if kind == "max" else nn.avg_pool)(y, (win, win), (stride, stride))
        return nn.Conv(2, (self.k3, self.k3), strides=self.s3, padding=self.p3, name="c")(y)


@pytest.mark.parametrize("seed", [0, 1])
def test_receptive_fields_against_brute_force_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    net = RandomNet(
        k1=int(rng.choice([2, 3])),
        d1=int(rng.choice([1, 2])),
        k2=int(rng.choice([1, 3])),
        pool=(int(rng.choice([2, 3])), int(rng.choice([1, 2])), str(rng.choice(["max", "avg"]))),
        k3=int(rng.choice([2, 3])),
        s3=int(rng.choice([1, 2])),
        p3=str(rng.choice(["VALID", "SAME"])),
    )
    n = 14
    x0 = jnp.asarray(rng.uniform(0.5, 1.5, (1, n, n, 1)), jnp.float32)
    variables = net.init(jax.random.key(0), x0)
    positive = jax.tree.map(
        lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), variables
    )
    s = gj.summary(net, x0, variables=positive, costs=False)
    row = next(r for r in s.rows if r.path == "c")
    # the stack rule (the skip's path lies inside the main path's span)
    p1 = _same(n, net.k1, 1, net.d1)
    win, stride, _ = net.pool
    stack = [gj.ConvLayer(net.k1, 1, net.d1, p1), gj.ConvLayer(net.k2, 1, 1, _same(n, net.k2))]
    m = (n - win) // stride + 1  # the pooled size
    p3 = _same(m, net.k3, net.s3) if net.p3 == "SAME" else (0, 0)
    stack += [gj.ConvLayer(win, stride), gj.ConvLayer(net.k3, net.s3, 1, p3)]
    rf = gj.receptive_field(stack)
    assert (row.rf_size, row.rf_jump, row.rf_start) == (rf.size * 2, rf.jump * 2, rf.start * 2)
    assert np.isnan(row.flops) and np.isnan(s.backward_flops)  # costs=False
    # brute force: a huge bump at one input position changes exactly the outputs it reaches
    bumps = 1e6 * jnp.eye(n * n, dtype=jnp.float32).reshape(n * n, 1, n, n, 1)
    base = net.apply(positive, x0)
    outs = jax.jit(jax.vmap(lambda b: net.apply(positive, x0 + b)))(bumps)
    # a change above rounding noise (the batched and unbatched convs may round differently)
    reach = np.asarray(jnp.abs(outs - base[None]) > 1.0).any(axis=(1, 4))  # (pos, out h, w)
    reach = reach.reshape(n, n, *reach.shape[1:])
    interior = 0
    for a in range(2):
        size, jump, start = row.rf_size[a], row.rf_jump[a], row.rf_start[a]
        for i in range(row.output_shape[1 + a]):
            mid = row.output_shape[2 - a] // 2
            dep = reach[:, :, i, mid] if a == 0 else reach[:, :, mid, i]
            hit = np.flatnonzero(dep.any(axis=1 - a))
            lo, hi = start + i * jump, start + i * jump + size - 1
            assert hit.size and lo <= hit[0] and hit[-1] <= hi
            if lo >= 0 and hi <= n - 1:
                interior += 1
                assert (hit[0], hit[-1]) == (lo, hi)
    assert interior > 0


def test_bad_input_names_the_argument():
    x = jnp.ones((1, 4, 4, 1))
    with pytest.raises(ValueError, match=r"`model_or_fn` \(=3\) must be"):
        gj.summary(3, x)
    with pytest.raises(ValueError, match=r"`inputs` \(=\(\)\) must be"):
        gj.summary(lambda x: x)
    with pytest.raises(ValueError, match=r"`inputs\[0\]` \(='abc'\) must be"):
        gj.summary(lambda x: x, "abc")
    with pytest.raises(ValueError, match=r"`wrt` \(=2\) must be"):
        gj.summary(lambda x: x, x, wrt=2)
    with pytest.raises(ValueError, match=r"`costs` \(='no'\) must be"):
        gj.summary(lambda x: x, x, costs="no")
