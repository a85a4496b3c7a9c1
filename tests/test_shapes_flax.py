"""flax_conv_output_shape against applying flax.linen / flax.nnx Conv and ConvTranspose."""

from __future__ import annotations

import random

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from gated_jax.lab import shapes as V
from gated_jax.shapes import flax_conv_output_shape

# Constant initialisers keep the programs small (random init dominates trace and compile time).
CHEAP = dict(kernel_init=nn.initializers.ones, use_bias=False)
random_module_args = V.random_flax_module_args


def applied_shape(module_fn, shape):
    """Shape from applying the module (abstractly), or the exception it raised."""
    try:
        return tuple(module_fn(jax.ShapeDtypeStruct(shape, jnp.float32)))
    except Exception as e:  # Flax raises ValueError, AssertionError, TypeError, ...
        return e


def compare(module, shape, expected):
    if isinstance(expected, Exception):
        with pytest.raises(ValueError):
            flax_conv_output_shape(module, shape)
    else:
        assert flax_conv_output_shape(module, shape) == expected, (module, shape)
    return not isinstance(expected, Exception)


def linen_shape(module):
    def fn(x):
        return jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0], x).shape

    return fn


@pytest.mark.parametrize("transpose", [False, True], ids=["Conv", "ConvTranspose"])
def test_linen_modules_random_configs(transpose):
    rng = random.Random(1 + transpose)
    cls = nn.ConvTranspose if transpose else nn.Conv
    accepted = 0
    for _ in range(200):
        kw, shape = random_module_args(rng, transpose)
        module = cls(features=3, **kw, **CHEAP)
        accepted += compare(module, shape, applied_shape(linen_shape(module), shape))
    assert 60 <= accepted < 200  # both outcomes are exercised


@pytest.mark.parametrize("transpose", [False, True], ids=["Conv", "ConvTranspose"])
def test_nnx_modules_random_configs(transpose):
    rng = random.Random(11 + transpose)
    cls = nnx.ConvTranspose if transpose else nnx.Conv
    accepted = 0
    for _ in range(80):
        kw, shape = random_module_args(rng, transpose)

        def make(kw=kw, c=shape[-1]):
            return cls(c, 4, rngs=nnx.Rngs(0), **kw, **CHEAP)

        try:
            module = nnx.eval_shape(make)  # abstract parameters: nothing is initialised
        except Exception:
            continue  # the constructor itself refuses (e.g. groups); nothing to apply
        expected = applied_shape(
            lambda x, make=make: nnx.eval_shape(lambda x: make()(x), x).shape, shape
        )
        accepted += compare(module, shape, expected)
    assert accepted >= 30


def test_every_flax_padding_mode_by_running_the_module():
    """Concrete application, one module per padding mode Flax accepts."""
    x1 = jnp.ones((2, 9, 3))
    x2 = jnp.ones((9, 8, 3))  # unbatched
    cases = [
        (nn.Conv(4, (3,), strides=2, padding="SAME", **CHEAP), x1),
        (nn.Conv(4, (3,), strides=2, padding="VALID", **CHEAP), x1),
        (nn.Conv(4, (4,), strides=2, padding="CIRCULAR", kernel_dilation=2, **CHEAP), x1),
        (nn.Conv(4, (4,), padding="REFLECT", **CHEAP), x1),
        (nn.Conv(4, (3,), padding="CAUSAL", kernel_dilation=3, **CHEAP), x1),
        (nn.Conv(4, (3, 2), padding=[(2, 0), 1], input_dilation=(2, 1), **CHEAP), x2),
        (
            nn.ConvTranspose(4, (3,), strides=(3,), padding="VALID", kernel_dilation=(2,), **CHEAP),
            x1,
        ),
        (nn.ConvTranspose(4, (4, 3), strides=(2, 2), padding="CIRCULAR", **CHEAP), x2),
        (nn.ConvTranspose(4, (3, 3), padding=[(1, 2), (0, 0)], transpose_kernel=True, **CHEAP), x2),
    ]

    @jax.jit
    def apply_all(x1, x2):  # one compilation for every case
        key = jax.random.key(0)
        xs = {x1.shape: x1, x2.shape: x2}
        return [m.init_with_output(key, xs[x.shape])[0] for m, x in cases]

    for (module, x), y in zip(cases, apply_all(x1, x2), strict=True):
        assert flax_conv_output_shape(module, x.shape) == y.shape, module

    def make():
        return nnx.Conv(3, 4, (3, 3), strides=2, padding="CIRCULAR", rngs=nnx.Rngs(0), **CHEAP)

    y = nnx.jit(lambda x: make()(x))(x2)
    assert flax_conv_output_shape(nnx.eval_shape(make), x2.shape) == y.shape


def test_conv_local_has_the_conv_shape():
    module = nn.ConvLocal(4, (3, 2), strides=(2, 3), padding="SAME")
    x = jax.ShapeDtypeStruct((9, 8, 3), jnp.float32)
    expected = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0], x)
    assert flax_conv_output_shape(module, x.shape) == expected.shape == (5, 3, 4)


def test_flax_rejections():
    with pytest.raises(ValueError, match="CAUSAL"):
        flax_conv_output_shape(nn.Conv(4, (3, 3), padding="CAUSAL"), (1, 5, 5, 2))
    with pytest.raises(ValueError, match="padding"):
        flax_conv_output_shape(nn.Conv(4, (3,), padding="circular"), (1, 5, 2))
    with pytest.raises(ValueError, match="padding"):
        flax_conv_output_shape(nn.ConvTranspose(4, (3,), padding="REFLECT"), (1, 5, 2))
    with pytest.raises(ValueError, match="feature_group_count"):
        flax_conv_output_shape(nn.Conv(4, (3,), feature_group_count=2), (1, 5, 3))
    with pytest.raises(ValueError, match="input_shape"):
        flax_conv_output_shape(nn.Conv(4, (3, 3)), (5, 2))
    with pytest.raises(ValueError, match="in_features"):
        flax_conv_output_shape(
            nnx.eval_shape(lambda: nnx.Conv(3, 4, 3, rngs=nnx.Rngs(0))), (1, 5, 2)
        )
    with pytest.raises(ValueError, match="module"):
        flax_conv_output_shape(nn.Dense(3), (1, 5, 2))
    with pytest.raises(ValueError, match="strides"):
        flax_conv_output_shape(nn.Conv(4, (3,), strides=0), (1, 5, 2))
