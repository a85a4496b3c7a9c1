"""Numerics shared by the linen (:mod:`gated_jax.nn`) and NNX (:mod:`gated_jax.nnx`) modules.

Dtype promotion as ``nn.Dense`` does it, the shape checks of one step, and the sequence run with
``nn.RNN``'s conventions on :func:`gated_jax.cell.gated_scan`'s fast path. Imports neither
sibling, so ``nn`` and ``nnx`` depend on this module and on :mod:`gated_jax.cell` only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import canonicalize_dtype
from flax.linen.recurrent import flip_sequences

from gated_jax.cell import BACKWARDS, GatedParams, gated_scan

__all__ = ["apply_sequence", "check_backward", "check_step_shapes", "promote"]


def promote(params: GatedParams, carry, inputs, dtype):
    """Cast params, carry and inputs to the computation dtype, as ``nn.Dense`` does.

    The computation dtype is ``dtype`` if given, else the promoted type of all of them. The
    returned state dtype is ``result_type(computation dtype, carry dtype)``: a float32 carry
    stays float32 under a bfloat16 computation (as in Flax's ``MGUCell``), so ``nn.RNN``'s
    scan carry keeps its type.
    """
    leaves = [inputs, carry, params.w_x, params.w_c, params.w_z, params.b_c, params.b_x]
    d = canonicalize_dtype(*leaves, dtype=dtype)
    out_dtype = jnp.result_type(d, carry)
    x, z, w_x, w_c, w_z, b_c, b_x = (None if v is None else jnp.asarray(v, d) for v in leaves)
    return GatedParams(w_x, w_c, w_z, b_c, b_x), z, x, out_dtype


def check_step_shapes(carry, inputs, features: int) -> None:
    sx, sz = np.shape(inputs), np.shape(carry)
    if len(sx) < 1:
        raise ValueError(f"`inputs` must have shape (*batch, in_features); got shape {sx}")
    if len(sz) < 1 or sz[-1] != features:
        raise ValueError(
            f"`carry` must have shape (*batch, features) with features = {features}; got shape {sz}"
        )


def check_backward(backward) -> str:
    """Validate a ``backward`` option (one of ``gated_jax.cell.BACKWARDS``)."""
    if not isinstance(backward, str) or backward not in BACKWARDS:
        raise ValueError(f"`backward` (={backward!r}) must be one of {BACKWARDS}")
    return backward


def apply_sequence(
    params: GatedParams,
    inputs: jax.Array,
    carry: jax.Array,
    *,
    dtype=None,
    seq_lengths: jax.Array | None = None,
    time_major: bool = False,
    reverse: bool = False,
    keep_order: bool = False,
    unroll: int = 1,
    remat: bool = False,
    backward: str = "closed_form",
) -> tuple[jax.Array, jax.Array]:
    """``(final_carry, outputs)`` of the cell over ``inputs`` with ``nn.RNN``'s conventions.

    ``inputs`` is ``(*batch, T, n)`` (``(T, *batch, n)`` if ``time_major``), ``carry``
    ``(*batch, m)``. ``reverse`` flips each sequence's valid part (padding stays at the end,
    ``flax.linen.recurrent.flip_sequences``), runs forward and leaves the outputs in processing
    order unless ``keep_order``. Runs on :func:`gated_jax.cell.gated_scan`'s fast path.
    """
    sx = np.shape(inputs)
    if len(sx) < 2:
        raise ValueError(
            f"`inputs` must have shape (*batch, time, features) with rank >= 2; got shape {sx}"
        )
    xs = jnp.moveaxis(inputs, 0, -2) if time_major else inputs
    num_batch = xs.ndim - 2
    if seq_lengths is not None:
        seq_lengths = jnp.asarray(seq_lengths)
        if seq_lengths.shape != xs.shape[:-2]:
            raise ValueError(
                f"`seq_lengths` must have the batch shape {xs.shape[:-2]} of `inputs` "
                f"(shape {sx}, time_major={time_major}); got shape {seq_lengths.shape}"
            )
    want = xs.shape[:-2] + (int(np.shape(params.w_z)[0]),)
    if tuple(np.shape(carry)) != want:
        raise ValueError(
            f"`initial_carry` must have shape (*batch, features) = {want} for inputs of shape "
            f"{sx} (time_major={time_major}); got shape {tuple(np.shape(carry))}"
        )
    if reverse:
        xs = flip_sequences(xs, seq_lengths, num_batch_dims=num_batch, time_major=False)
    params, z0, xs, out_dtype = promote(params, carry, xs, dtype)
    zs = gated_scan(
        params, xs, z0, seq_lengths=seq_lengths, unroll=unroll, remat=remat, backward=backward
    )
    zs = zs.astype(out_dtype)
    # gated_scan holds the last valid state past each sequence's length, so the final row is
    # the carry after the last valid step (z0 for an empty sequence).
    final = (
        zs[..., -1, :] if zs.shape[-2] > 0 else jnp.broadcast_to(z0, zs.shape[:-2] + z0.shape[-1:])
    )
    final = final.astype(out_dtype)
    if reverse and keep_order:
        zs = flip_sequences(zs, seq_lengths, num_batch_dims=num_batch, time_major=False)
    if time_major:
        zs = jnp.moveaxis(zs, -2, 0)
    return final, zs
