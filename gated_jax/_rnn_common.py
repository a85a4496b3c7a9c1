"""What the linen (:mod:`gated_jax.nn`) and NNX (:mod:`gated_jax.nnx`) modules share.

The validation of every module option (one message format, :mod:`gated_jax._validate`), the
initialisers' half-precision rule, the map between the cell's parameter tree and
:class:`gated_jax.cell.GatedParams`, dtype promotion as ``nn.Dense`` does it, the shape checks
of one step, and the sequence run with ``nn.RNN``'s conventions on
:func:`gated_jax.cell.gated_scan`'s fast path. Imports neither sibling, so ``nn`` and ``nnx``
depend on this module and on :mod:`gated_jax.cell` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import canonicalize_dtype
from flax.linen.recurrent import flip_sequences

from gated_jax._validate import boolean, check_fits_in_memory, fail, positive_int
from gated_jax.cell import BACKWARDS, METHODS, GatedParams, gated_scan

__all__ = [
    "CELL_LEAVES",
    "REQUIRED_LEAVES",
    "apply_sequence",
    "as_inputs",
    "batch_shape",
    "brief",
    "brief_shape",
    "check_backward",
    "check_dtype",
    "check_gate_matches",
    "check_initializer",
    "check_param_memory",
    "check_remat",
    "check_step_shapes",
    "check_unroll",
    "flag",
    "from_tree",
    "half_safe",
    "optional_flag",
    "orthogonal",
    "promote",
    "size",
    "to_tree",
]

# --------------------------------------------------------------------------------------------
# option validation (construction time and call time)


def flag(name: str, value: Any) -> bool:
    """A strict bool option: ``True`` / ``False`` (or a NumPy bool), nothing truthy."""
    out = _flag(name, value, allow_none=False)
    assert out is not None
    return out


def optional_flag(name: str, value: Any) -> bool | None:
    """A call argument overriding a flag: ``None`` ("use the attribute") or a strict bool."""
    return _flag(name, value, allow_none=True)


def size(name: str, value: Any) -> int:
    """A positive int size (``positive_int`` without its ``None`` case)."""
    out = positive_int(name, value)
    assert out is not None
    return out


def _flag(name: str, value: Any, *, allow_none: bool) -> bool | None:
    if allow_none and value is None:
        return None
    if isinstance(value, jax.core.Tracer):
        raise fail(name, value, "a Python bool, not a traced value (make it static under jit)")
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, value, "a bool (True or False)" + (" or None" if allow_none else ""))
    return boolean(name, value)


def check_dtype(name: str, value: Any, *, allow_none: bool = False) -> None:
    """``value`` names a real floating dtype (``None`` allowed with ``allow_none``)."""
    if allow_none and value is None:
        return
    try:
        ok = value is not None and jnp.issubdtype(jnp.dtype(value), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise fail(name, value, "a floating dtype" + (" or None" if allow_none else ""))


def check_initializer(name: str, value: Any, *, allow_none: bool = False) -> None:
    """``value`` is an ``init(key, shape, dtype)`` callable (``None`` with ``allow_none``)."""
    if allow_none and value is None:
        return
    if not callable(value) or isinstance(value, type):
        raise fail(
            name,
            value,
            "an initializer, a callable init(key, shape, dtype) such as "
            "flax.linen.initializers.zeros_init()",
            error=TypeError,
        )


def check_remat(value: Any) -> bool | int:
    """``remat``: a strict bool, or a block length (an int >= 1)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value >= 1:
        return int(value)
    raise fail("remat", value, "a bool or a block length (an int >= 1)")


def check_backward(backward) -> str:
    """Validate a ``backward`` option (one of ``gated_jax.cell.BACKWARDS``)."""
    if not isinstance(backward, str) or backward not in BACKWARDS:
        raise fail("backward", backward, "one of " + ", ".join(repr(b) for b in BACKWARDS))
    return backward


def check_method(method) -> str:
    """Validate a ``method`` option (one of ``gated_jax.cell.METHODS``)."""
    if not isinstance(method, str) or method not in METHODS:
        raise fail("method", method, "one of " + ", ".join(repr(m) for m in METHODS))
    return method


def check_gate_matches(recurrent_gate: bool, has_hc: bool) -> None:
    """Given parameters match the cell's ``recurrent_gate``: an ``'hc'`` kernel iff ``True``."""
    if has_hc and not recurrent_gate:
        raise fail(
            "recurrent_gate",
            False,
            "True for the given parameters: they have an 'hc' kernel (a recurrent gate W_z); "
            "build the cell with recurrent_gate=True, or drop 'hc' for the minGRU cell",
        )
    if recurrent_gate and not has_hc:
        raise fail(
            "recurrent_gate",
            True,
            "False for the given parameters: they have no 'hc' kernel (the minGRU cell, "
            "w_z=None); build the cell with recurrent_gate=False",
        )


def check_unroll(value: Any) -> int:
    return size("unroll", value)


def as_inputs(name: str, value: Any) -> jax.Array:
    """An operand as an array: arrays pass, lists and NumPy arrays of numbers convert.

    Integer and bool arrays pass (the computation promotes them as ``nn.Dense`` does). Strings,
    ragged lists, ``None`` and object arrays are refused with a message naming ``name``.
    """
    arr: Any = value
    if not isinstance(value, (jax.Array, jax.core.Tracer)):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise fail(name, value, "an array (or nested list) of numbers") from None
    if not (jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(arr.dtype, jnp.bool_)):
        raise fail(name, value, "an array (or nested list) of numbers", error=TypeError)
    return jnp.asarray(arr)


def check_param_memory(
    name: str, value: int, n: int, m: int, dtype: Any, recurrent_gate: bool = True
) -> None:
    """Refuse parameter sizes that cannot fit in memory before allocating them."""
    count = 2 * n * m + (m * m if recurrent_gate else 0) + 2 * m
    nbytes = float(count) * jnp.dtype(dtype).itemsize
    check_fits_in_memory(name, value, nbytes, f"the cell's parameters (n={n}, m={m})")


# --------------------------------------------------------------------------------------------
# initialisers


_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def half_safe(init: Callable) -> Callable:
    """``init`` drawing in float32 and casting when asked for bfloat16 / float16.

    LAPACK has no half-precision QR, so ``orthogonal`` fails in bfloat16 on CPU; Flax's
    ``nnx.LSTMCell`` draws its recurrent kernel in float32 for the same reason. Other dtypes
    call ``init`` unchanged, so float32 / float64 values are exactly ``init``'s.
    """

    def wrapped(key, shape, dtype=jnp.float32):
        if jnp.dtype(dtype) in _HALF:
            return jnp.asarray(init(key, shape, jnp.float32), dtype)
        return init(key, shape, dtype)

    return wrapped


def orthogonal(key, shape, dtype=jnp.float32):
    """Orthogonal initialiser (``jax.nn.initializers.orthogonal()``), half precision allowed."""
    return half_safe(jax.nn.initializers.orthogonal())(key, shape, dtype)


# --------------------------------------------------------------------------------------------
# the parameter tree of the cell <-> GatedParams

CELL_LEAVES = ("ic", "hc", "ix")  # input->gate, hidden->gate, input->candidate
REQUIRED_LEAVES = ("ic", "ix")  # 'hc' is absent without a recurrent gate (the minGRU cell)


class _Shown:
    """A value shown in a message by a short description (a dict by its keys, not its arrays)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def brief_shape(width: int) -> Any:
    """``inputs`` described by their last dimension, for messages that only know it."""
    return _Shown(f"array of shape (..., {width})")


def brief(value: Any) -> Any:
    """``value`` for a message: a mapping by its keys, a module (multi-line repr) by its type."""
    if isinstance(value, Mapping):
        return _Shown(f"{type(value).__name__} with keys {sorted(map(str, value))}")
    if not hasattr(value, "shape") and "\n" in repr(value):
        return _Shown(f"{type(value).__name__}(...)")
    return value


def _unwrap(tree: Any, name: str) -> Mapping[str, Any]:
    """Accept ``variables``, ``variables['params']``, an RNN's params or a cell's params."""
    for key in ("params", "cell"):
        if isinstance(tree, Mapping) and key in tree and "ic" not in tree:
            tree = tree[key]
    ok = isinstance(tree, Mapping) and set(REQUIRED_LEAVES) <= set(tree)
    present = [k for k in CELL_LEAVES if ok and k in tree]
    ok = ok and all(isinstance(tree[k], Mapping) and "kernel" in tree[k] for k in present)
    if not ok:
        raise fail(
            name,
            brief(tree),
            "a GatedCell parameter tree with submodules 'ic', 'ix' and (with a recurrent gate) "
            "'hc', each with a 'kernel' (optionally under 'params' and/or 'cell')",
        )
    return tree


def _leaf(v):
    return jnp.asarray(v[...] if hasattr(v, "get_value") else v)


def to_tree(tree: Any, name: str = "tree") -> GatedParams:
    """``GatedParams`` from a cell parameter tree (``w_c = ic.kernel.T``, ...).

    A tree without ``'hc'`` (a cell with ``recurrent_gate=False``) gives ``w_z=None``.
    """
    t = _unwrap(tree, name)
    kernels = {k: _leaf(t[k]["kernel"]) for k in CELL_LEAVES if k in t}
    for k, a in kernels.items():
        if a.ndim != 2:
            raise fail(f"{name}['{k}']['kernel']", a, "a 2-D (in, out) kernel")
    m = kernels["ic"].shape[1]
    n = kernels["ic"].shape[0]
    want = {"ic": (n, m), "hc": (m, m), "ix": (n, m)}
    for k, a in kernels.items():
        if a.shape != want[k]:
            raise fail(f"{name}['{k}']['kernel']", a, f"of shape {want[k]} (n={n}, m={m})")

    def bias(k):
        b = t[k].get("bias")
        if b is None:
            return None
        b = _leaf(b)
        if b.shape != (m,):
            raise fail(f"{name}['{k}']['bias']", b, f"of shape ({m},)")
        return b

    return GatedParams(
        w_x=kernels["ix"].T,
        w_c=kernels["ic"].T,
        w_z=kernels["hc"].T if "hc" in kernels else None,
        b_c=bias("ic"),
        b_x=bias("ix"),
    )


def from_tree(params: Any, name: str = "params") -> dict[str, Any]:
    """The cell parameter tree ``{'ic': ..., 'hc': ..., 'ix': ...}`` of ``GatedParams``.

    ``w_z=None`` (the minGRU cell) gives a tree without ``'hc'``.
    """
    if not isinstance(params, GatedParams):
        raise fail(
            name,
            brief(params),
            "a gated_jax.cell.GatedParams (build one with GatedParams(w_x=..., w_c=..., "
            "w_z=...) or gated_jax.cell.init_gated_params)",
            error=TypeError,
        )
    if (params.b_c is None) != (params.b_x is None):
        got = f"b_c={'None' if params.b_c is None else 'array'}, "
        got += f"b_x={'None' if params.b_x is None else 'array'}"
        raise fail(
            name,
            _Shown(got),
            "a GatedParams with both biases or neither (GatedCell.use_bias covers both)",
        )
    w_x, w_c = jnp.asarray(params.w_x), jnp.asarray(params.w_c)
    w_z = None if params.w_z is None else jnp.asarray(params.w_z)
    bad_z = w_z is not None and w_z.shape != (w_x.shape[0],) * 2
    if w_x.ndim != 2 or w_c.shape != w_x.shape or bad_z:
        got = f"w_x {w_x.shape}, w_c {w_c.shape}, w_z {None if w_z is None else w_z.shape}"
        raise fail(
            name,
            _Shown(got),
            "a GatedParams with w_x, w_c of shape (m, n) and w_z of shape (m, m) or None",
        )
    ic: dict[str, Any] = {"kernel": w_c.T}
    ix: dict[str, Any] = {"kernel": w_x.T}
    if params.b_c is not None:
        b_c, b_x = jnp.asarray(params.b_c), jnp.asarray(params.b_x)
        if b_c.shape != (w_x.shape[0],) or b_x.shape != b_c.shape:
            got = f"b_c {b_c.shape}, b_x {b_x.shape}"
            raise fail(name, _Shown(got), f"a GatedParams with biases of shape ({w_x.shape[0]},)")
        ic["bias"], ix["bias"] = b_c, b_x
    if w_z is None:
        return {"ic": ic, "ix": ix}
    return {"ic": ic, "hc": {"kernel": w_z.T}, "ix": ix}


def promote(params: GatedParams, carry, inputs, dtype):
    """Cast params, carry and inputs to the computation dtype, as ``nn.Dense`` does.

    The computation dtype is ``dtype`` if given, else the promoted type of all of them. The
    returned state dtype is the carry's own when it is floating: a float32 carry stays float32
    under a bfloat16 computation and under float64 inputs, so ``nn.RNN``'s scan carry keeps
    its type (an integer carry gives the computation dtype, never a truncated state).
    """
    leaves = [inputs, carry, params.w_x, params.w_c, params.w_z, params.b_c, params.b_x]
    d = canonicalize_dtype(*leaves, dtype=dtype)
    carry_dtype = jnp.result_type(carry)
    out_dtype = carry_dtype if jnp.issubdtype(carry_dtype, jnp.floating) else jnp.dtype(d)
    x, z, w_x, w_c, w_z, b_c, b_x = (None if v is None else jnp.asarray(v, d) for v in leaves)
    return GatedParams(w_x, w_c, w_z, b_c, b_x), z, x, out_dtype  # type: ignore[arg-type]


def check_step_shapes(carry, inputs, features: int, in_features: int | None = None) -> None:
    """One step's operands: ``inputs`` ``(*batch, n)``, ``carry`` ``(*batch, features)``."""
    sx, sz = np.shape(inputs), np.shape(carry)
    if len(sx) < 1 or (in_features is not None and sx[-1] != in_features):
        need = "of shape (*batch, in_features)"
        if in_features is not None:
            need += f" with in_features = {in_features}"
        raise fail("inputs", inputs, need)
    if len(sz) < 1 or sz[-1] != features:
        raise fail("carry", carry, f"of shape (*batch, features) with features = {features}")
    if sz[:-1] != sx[:-1]:
        raise fail("carry", carry, f"of batch shape {sx[:-1]}, that of `inputs` (shape {sx})")


def batch_shape(inputs, time_major: bool) -> tuple[int, ...]:
    """The batch dims of ``inputs`` ``(*batch, T, n)`` (``(T, *batch, n)`` if time-major)."""
    sx = tuple(np.shape(inputs))
    if len(sx) < 2:
        raise fail("inputs", inputs, "of shape (*batch, time, features), rank >= 2")
    return sx[1:-1] if time_major else sx[:-2]


def _check_lengths(given, batch, T: int, sx, time_major: bool) -> jax.Array:
    """``seq_lengths``: ints of the batch shape in ``[0, T]`` (the range checked when concrete)."""
    lengths = given
    if not isinstance(given, (jax.Array, jax.core.Tracer)):
        try:
            lengths = np.asarray(given)
        except (TypeError, ValueError):
            lengths = None
    if lengths is None or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise fail("seq_lengths", given, f"an integer array of the batch shape {batch}")
    if tuple(lengths.shape) != batch:
        raise fail(
            "seq_lengths",
            given,
            f"of the batch shape {batch} of `inputs` (shape {sx}, time_major={time_major})",
        )
    if not isinstance(lengths, jax.core.Tracer):
        v = np.asarray(lengths)
        if v.size and (v.min() < 0 or v.max() > T):
            shown = _Shown(str(v.tolist())) if v.size <= 16 else given
            raise fail("seq_lengths", shown, f"ints in [0, T] = [0, {T}]")
    return jnp.asarray(lengths)


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
    remat: bool | int = False,
    backward: str = "closed_form",
    method: str = "sequential",
) -> tuple[jax.Array, jax.Array]:
    """``(final_carry, outputs)`` of the cell over ``inputs`` with ``nn.RNN``'s conventions.

    ``inputs`` is ``(*batch, T, n)`` (``(T, *batch, n)`` if ``time_major``), ``carry``
    ``(*batch, m)``. ``reverse`` flips each sequence's valid part (padding stays at the end,
    ``flax.linen.recurrent.flip_sequences``), runs forward and leaves the outputs in processing
    order unless ``keep_order``. Runs on :func:`gated_jax.cell.gated_scan`'s fast path.
    """
    batch = batch_shape(inputs, time_major)
    sx = tuple(np.shape(inputs))
    if sx[-1] != params.n:
        raise fail("inputs", inputs, f"of shape (*batch, time, {params.n}): the cell's input width")
    xs = jnp.moveaxis(inputs, 0, -2) if time_major else inputs
    num_batch = len(batch)
    if seq_lengths is not None:
        seq_lengths = _check_lengths(seq_lengths, batch, int(xs.shape[-2]), sx, time_major)
    want = batch + (params.m,)
    if not hasattr(carry, "shape") or tuple(np.shape(carry)) != want:
        raise fail(
            "initial_carry",
            carry,
            f"of shape (*batch, features) = {want} for `inputs` of shape {sx} "
            f"(time_major={time_major})",
        )
    if reverse:
        xs = flip_sequences(xs, seq_lengths, num_batch_dims=num_batch, time_major=False)
    params, z0, xs, out_dtype = promote(params, carry, xs, dtype)
    zs = gated_scan(
        params,
        xs,
        z0,
        seq_lengths=seq_lengths,
        unroll=unroll,
        remat=remat,
        backward=backward,
        method=method,
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
