r"""The one sequence driver of the Flax modules, and the cell's parameter map.

:mod:`gated_jax.nn` (linen) and :mod:`gated_jax.nnx` (NNX) are thin front-ends over this
module, as Flax's ``nn.RNN`` is one generic driver for every cell: the cell owns the cell
options and its parameters, the layer adds only the sequence options. Written once here:

- the sequence options (:data:`SEQUENCE_OPTIONS`, validated by :func:`sequence_options`) and
  the call-time overrides of its flags;
- the call: inputs, carry, ``seq_lengths``, ``reverse`` / ``keep_order``, ``time_major``,
  ``method``, ``return_carry`` and the initial carry (:func:`run_sequence`), run on
  :func:`gated_jax.cell.gated_scan` (:func:`apply_sequence`);
- one step's operand checks and dtype promotion as ``nn.Dense`` does it (:func:`promote`);
- the map between the cell's parameter tree and :class:`gated_jax.cell.GatedParams`
  (:func:`to_tree`, :func:`from_tree`) and the initialisers' half-precision rule.

For every valid step ``t`` of each sequence the driver computes

.. math::

    c_t = \sigma(W_c x_t + W_z z_{t-1} + b_c), \qquad
    z_t = c_t \odot z_{t-1} + (1 - c_t) \odot (W_x x_t + b_x),

and holds ``z`` past each sequence's length. Argument validators live in
:mod:`gated_jax._validate`. This module imports neither front-end, so ``nn`` and ``nnx``
depend on it and on :mod:`gated_jax.cell` only.

References:
  Flax's ``flax.linen.RNN`` / ``flax.nnx.RNN`` (https://flax.readthedocs.io), whose sequence
  options and conventions the driver follows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import canonicalize_dtype
from flax.linen.recurrent import flip_sequences
from jax import lax

from gated_jax._validate import (
    Shown,
    as_numeric_array,
    brief,
    check_array,
    check_fits_in_memory,
    check_recurrent_shape,
    check_remat,
    check_unroll,
    choice,
    fail,
    flag,
    optional_flag,
    positive_int,
)
from gated_jax.cell import (
    BACKWARDS,
    METHODS,
    DeerInfo,
    DeerNotConverged,
    GatedParams,
    deer_scan,
    gated_deer,
    gated_scan,
    resolve_method,
)
from gated_jax.cell._affine import check_solver_options, concrete
from gated_jax.cell.params import default_recurrent_init, recurrent_shape
from gated_jax.cell.step import loop_weights

__all__ = [
    "CELL_LEAVES",
    "PARALLEL_METHODS",
    "REQUIRED_LEAVES",
    "SEQUENCE_FLAGS",
    "SOLVER_OPTIONS",
    "SEQUENCE_OPTIONS",
    "apply_sequence",
    "batch_shape",
    "prepare_call",
    "cell_options_beside_cell",
    "check_gate_matches",
    "check_param_memory",
    "check_step_shapes",
    "from_tree",
    "half_safe",
    "loop_weights",
    "orthogonal",
    "parallel_options",
    "solver_options",
    "run_cell",
    "promote",
    "recurrent_init",
    "recurrent_kernel_shape",
    "run_sequence",
    "sequence_options",
    "to_tree",
]

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


def recurrent_init(init: Callable, kind: str | None) -> Callable:
    """The ``hc`` kernel's initialiser: ``init``, or for the default (:func:`orthogonal`) on a
    structured gate the structure's default (uniform on ``[-1, 1]`` for a diagonal kernel, an
    orthogonal draw per head), half precision allowed."""
    if init is orthogonal and kind != "dense":
        return half_safe(default_recurrent_init(kind))
    return half_safe(init)


def recurrent_kernel_shape(kind: str | None, heads: int, m: int) -> tuple[int, ...] | None:
    """The ``hc`` kernel's shape: ``w_z``'s, ``(m, m)``, ``(m,)`` or ``(H, h, h)`` (the kernel
    is ``W_z`` transposed in its structure: ``K^T`` dense, ``w_z`` diagonal, ``w_z[k]^T`` per
    head)."""
    return recurrent_shape(kind, heads, m)


# --------------------------------------------------------------------------------------------
# the parameter tree of the cell <-> GatedParams

CELL_LEAVES = ("ic", "hc", "ix")  # input->gate, hidden->gate, input->candidate
REQUIRED_LEAVES = ("ic", "ix")  # 'hc' is absent without a recurrent gate (the minGRU cell)


def check_param_memory(
    name: str, value: int, n: int, m: int, dtype: Any, recurrent: tuple[int, ...] | None
) -> None:
    """Refuse parameter sizes that cannot fit in memory before allocating them (``recurrent``:
    the ``hc`` kernel's shape, or ``None``)."""
    count = 2 * n * m + (int(np.prod(recurrent, dtype=np.int64)) if recurrent else 0) + 2 * m
    nbytes = float(count) * jnp.dtype(dtype).itemsize
    check_fits_in_memory(name, value, nbytes, f"the cell's parameters (n={n}, m={m})")


def _other_structure(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """A given ``hc`` kernel of another structure (rank, or number of heads) than the cell's
    (another width alone is a ``features`` mismatch, reported as such)."""
    return len(have) != len(want) or (len(want) == 3 and have[0] != want[0])


def check_gate_matches(
    recurrent_gate: Any,
    has_hc: bool,
    hc_shape: tuple[int, ...] | None = None,
    want: tuple[int, ...] | None = None,
) -> None:
    """Given parameters match the cell's ``recurrent_gate``: an ``'hc'`` kernel iff the cell
    has a recurrent gate, of the structure's shape ``want`` (``hc_shape``, when given)."""
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
            recurrent_gate,
            "False for the given parameters: they have no 'hc' kernel (the minGRU cell, "
            "w_z=None); build the cell with recurrent_gate=False",
        )
    if has_hc and hc_shape is not None and want is not None and _other_structure(hc_shape, want):
        raise fail(
            "recurrent_gate",
            recurrent_gate,
            f"the structure of the given 'hc' kernel {tuple(hc_shape)} (the cell's is {want}: "
            "'dense' (m, m), 'diagonal' (m,), 'heads' (H, h, h) with heads=H)",
        )


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


def _leaf(v, name: str):
    """A tree leaf (an NNX variable's value, or an array) as a real numeric JAX array."""
    value = v[...] if hasattr(v, "get_value") else v
    check_array(name, value)
    return jnp.asarray(value)


def _tree_kernels(t: Mapping[str, Any], name: str) -> dict[str, jax.Array]:
    """The tree's kernels, checked: ``ic``/``ix`` 2-D ``(n, m)``, ``hc`` ``(m, m)``, ``(m,)``
    (diagonal) or ``(H, h, h)`` with ``H h = m`` (heads)."""
    kernels = {}
    for k in (k for k in CELL_LEAVES if k in t):
        a = kernels[k] = _leaf(t[k]["kernel"], f"{name}['{k}']['kernel']")
        if a.ndim != 2 and k != "hc":
            raise fail(f"{name}['{k}']['kernel']", a, "a 2-D (in, out) kernel")
    n, m = kernels["ic"].shape
    want = {"ic": (n, m), "ix": (n, m)}
    for k, a in kernels.items():
        if k == "hc":
            check_recurrent_shape(f"{name}['hc']['kernel']", a, m)
        elif a.shape != want[k]:
            raise fail(f"{name}['{k}']['kernel']", a, f"of shape {want[k]} (n={n}, m={m})")
    return kernels


def _tree_bias(t: Mapping[str, Any], k: str, m: int, name: str) -> jax.Array | None:
    b = t[k].get("bias")
    if b is None:
        return None
    b = _leaf(b, f"{name}['{k}']['bias']")
    if b.shape != (m,):
        raise fail(f"{name}['{k}']['bias']", b, f"of shape ({m},)")
    return b


def to_tree(tree: Any, name: str = "tree") -> GatedParams:
    r"""``GatedParams`` from a cell parameter tree.

    .. math::

        W_c = K_{ic}^\top, \quad W_z = K_{hc}^\top, \quad W_x = K_{ix}^\top, \quad
        b_c = b_{ic}, \quad b_x = b_{ix}.

    A tree without ``'hc'`` (a cell with ``recurrent_gate=False``) gives ``w_z=None``; a
    structured ``hc`` kernel is transposed in its structure (``(m,)``: ``w_z = K_{hc}``;
    ``(H, h, h)``: ``w_z[k] = K_{hc}[k]^T``).

    Raises:
      ValueError: ``tree`` is not a cell's tree or its shapes disagree (naming ``name``).
    """
    t = _unwrap(tree, name)
    kernels = _tree_kernels(t, name)
    m = kernels["ic"].shape[1]
    return GatedParams(
        w_x=kernels["ix"].T,
        w_c=kernels["ic"].T,
        w_z=loop_weights(kernels["hc"]) if "hc" in kernels else None,
        b_c=_tree_bias(t, "ic", m, name),
        b_x=_tree_bias(t, "ix", m, name),
    )


def _check_gated_params(params: Any, name: str) -> None:
    """``params`` is a ``GatedParams`` with both biases or neither and consistent shapes."""
    if not isinstance(params, GatedParams):
        raise fail(
            name,
            brief(params),
            "a gated_jax.cell.GatedParams (build one with GatedParams(w_x=..., w_c=..., "
            "w_z=...) or gated_jax.cell.init_gated_params)",
            error=TypeError,
        )
    for field in params._fields:
        if getattr(params, field) is not None:
            check_array(f"{name}.{field}", getattr(params, field))
    if (params.b_c is None) != (params.b_x is None):
        got = f"b_c={'None' if params.b_c is None else 'array'}, "
        got += f"b_x={'None' if params.b_x is None else 'array'}"
        raise fail(
            name,
            Shown(got),
            "a GatedParams with both biases or neither (GatedCell.use_bias covers both)",
        )
    w_x, w_c = np.shape(params.w_x), np.shape(params.w_c)
    w_z = None if params.w_z is None else np.shape(params.w_z)
    m = w_x[0] if len(w_x) == 2 else -1
    structured = w_z is None or w_z in ((m, m), (m,))
    if w_z is not None and len(w_z) == 3:
        structured = w_z[1] == w_z[2] and w_z[0] * w_z[1] == m
    if len(w_x) != 2 or w_c != w_x or not structured:
        raise fail(
            name,
            Shown(f"w_x {w_x}, w_c {w_c}, w_z {w_z}"),
            "a GatedParams with w_x, w_c of shape (m, n) and w_z of shape (m, m), (m,), "
            "(H, h, h) with H h = m, or None",
        )
    if params.b_c is not None and params.b_x is not None:
        b_c, b_x = np.shape(params.b_c), np.shape(params.b_x)
        if b_c != (w_x[0],) or b_x != b_c:
            need = f"a GatedParams with biases of shape ({w_x[0]},)"
            raise fail(name, Shown(f"b_c {b_c}, b_x {b_x}"), need)


def from_tree(params: Any, name: str = "params") -> dict[str, Any]:
    """The cell parameter tree ``{'ic': ..., 'hc': ..., 'ix': ...}`` of ``GatedParams``.

    The inverse of :func:`to_tree`; ``w_z=None`` (the minGRU cell) gives a tree without
    ``'hc'``.

    Raises:
      TypeError: ``params`` is not a ``GatedParams``.
      ValueError: one bias without the other, or inconsistent shapes.
    """
    _check_gated_params(params, name)
    ic: dict[str, Any] = {"kernel": jnp.asarray(params.w_c).T}
    ix: dict[str, Any] = {"kernel": jnp.asarray(params.w_x).T}
    if params.b_c is not None:
        ic["bias"], ix["bias"] = jnp.asarray(params.b_c), jnp.asarray(params.b_x)
    if params.w_z is None:
        return {"ic": ic, "ix": ix}
    return {"ic": ic, "hc": {"kernel": loop_weights(jnp.asarray(params.w_z))}, "ix": ix}


# --------------------------------------------------------------------------------------------
# one step: operands and dtype promotion


def promote(params: GatedParams, carry, inputs, dtype):
    """Cast params, carry and inputs to the computation dtype, as ``nn.Dense`` does.

    The computation dtype is ``dtype`` if given, else the promoted type of all of them. The
    returned state dtype is the carry's own when it is floating: a float32 carry stays float32
    under a bfloat16 computation and under float64 inputs, so ``nn.RNN``'s scan carry keeps
    its type (an integer carry gives the computation dtype, never a truncated state).

    Returns:
      ``(params, carry, inputs, out_dtype)``, the first three in the computation dtype.
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


# --------------------------------------------------------------------------------------------
# the sequence driver

SEQUENCE_FLAGS = ("time_major", "return_carry", "reverse", "keep_order")
SEQUENCE_OPTIONS = SEQUENCE_FLAGS + ("unroll", "remat", "backward", "method")


def sequence_options(
    *,
    time_major: Any = False,
    return_carry: Any = False,
    reverse: Any = False,
    keep_order: Any = False,
    unroll: Any = 1,
    remat: Any = False,
    backward: Any = "auto",
    method: Any = "sequential",
) -> dict[str, Any]:
    """The layer's sequence options, validated (in this order) and normalised.

    Returns:
      ``{name: value}`` for every name of :data:`SEQUENCE_OPTIONS`: strict bools, ``unroll``
      a positive int, ``remat`` a bool or a block length, ``backward`` one of
      ``gated_jax.cell.BACKWARDS`` and ``method`` one of ``gated_jax.cell.METHODS``.

    Raises:
      ValueError: naming the first invalid option.
    """
    flags = (time_major, return_carry, reverse, keep_order)
    out: dict[str, Any] = {k: flag(k, v) for k, v in zip(SEQUENCE_FLAGS, flags, strict=True)}
    out["unroll"] = check_unroll(unroll)
    out["remat"] = check_remat(remat)
    out["backward"] = choice("backward", backward, BACKWARDS)
    out["method"] = choice("method", method, METHODS)
    return out


def cell_options_beside_cell(given: list[str]) -> TypeError:
    """The error for cell options passed to a layer that was given its cell."""
    return TypeError(f"GatedRNN got cell options {given} beside a cell: set them on the GatedCell")


def batch_shape(inputs, time_major: bool) -> tuple[int, ...]:
    """The batch dims of ``inputs`` ``(*batch, T, n)`` (``(T, *batch, n)`` if time-major)."""
    sx = tuple(np.shape(inputs))
    if len(sx) < 2:
        raise fail("inputs", inputs, "of shape (*batch, time, features), rank >= 2")
    return sx[1:-1] if time_major else sx[:-2]


def _input_width(inputs, in_features: int | None) -> int:
    """``n``, the last dim of ``inputs``: ``in_features`` when the cell fixes it, else >= 1."""
    n = int(np.shape(inputs)[-1])
    if in_features is not None and n != in_features:
        need = f"of shape (*batch, time, {in_features}): in_features = {in_features}"
        raise fail("inputs", inputs, need)
    if n < 1:
        raise fail("inputs", inputs, "of shape (*batch, time, n) with n >= 1")
    return n


def _call_flags(layer: Any, overrides: Mapping[str, Any]) -> dict[str, bool]:
    """The call's flags: each override (``None``: the layer's attribute) as a strict bool."""
    out = {}
    for name in SEQUENCE_FLAGS:
        v = optional_flag(name, overrides.get(name))
        out[name] = getattr(layer, name) if v is None else v
    return out


def run_sequence(
    layer: Any,
    inputs: Any,
    *,
    cell_params: Callable[[int], GatedParams],
    new_carry: Callable[[tuple[int, ...]], jax.Array],
    in_features: int | None,
    dtype: Any,
    initial_carry: Any = None,
    seq_lengths: Any = None,
    overrides: Mapping[str, Any] | None = None,
    on_info: Callable[[DeerInfo], Any] | None = None,
):
    """A layer's call: ``outputs`` (or ``(carry, outputs)``) of its cell over ``inputs``.

    The one body of ``gated_jax.nn.GatedRNN.__call__`` and ``gated_jax.nnx.GatedRNN.__call__``.

    Args:
      layer: the layer, read for the options of :data:`SEQUENCE_OPTIONS` (as attributes).
      inputs: ``(*batch, T, n)`` (``(T, *batch, n)`` if time-major); lists convert.
      cell_params: ``n -> GatedParams``, the cell's parameters for input width ``n``
        (created on first use in linen).
      new_carry: ``(*batch, n) -> carry``, the cell's ``initialize_carry`` with its key.
      in_features: the cell's input width when it fixes one (NNX), else ``None``.
      dtype: the cell's computation dtype (``None``: promoted).
      initial_carry: ``(*batch, m)``; default ``new_carry(...)``.
      seq_lengths: ``(*batch,)`` ints in ``[0, T]``.
      overrides: call-time values of :data:`SEQUENCE_FLAGS` (``None``: the attribute).
      on_info: called with the solver's :class:`~gated_jax.cell.DeerInfo` when a parallel
        method ran (the layer sows it); ``None``: not wanted (see :func:`apply_sequence`).

    Returns:
      The outputs ``(*batch, T, m)``, or ``(carry, outputs)`` with ``return_carry``.
    """
    flags = _call_flags(layer, overrides or {})
    inputs = as_numeric_array("inputs", inputs)
    batch = batch_shape(inputs, flags["time_major"])
    n = _input_width(inputs, in_features)
    if initial_carry is None:
        initial_carry = new_carry(batch + (n,))
    else:
        initial_carry = as_numeric_array("initial_carry", initial_carry)
    carry, outputs = apply_sequence(
        cell_params(n),
        inputs,
        initial_carry,
        dtype=dtype,
        seq_lengths=seq_lengths,
        time_major=flags["time_major"],
        reverse=flags["reverse"],
        keep_order=flags["keep_order"],
        unroll=layer.unroll,
        remat=layer.remat,
        backward=layer.backward,
        method=layer.method,
        on_info=on_info,
    )
    return (carry, outputs) if flags["return_carry"] else outputs


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
            shown = Shown(str(v.tolist())) if v.size <= 16 else given
            raise fail("seq_lengths", shown, f"ints in [0, T] = [0, {T}]")
    return jnp.asarray(lengths)


def _check_carry(carry, want: tuple[int, ...], sx, time_major: bool) -> None:
    if not hasattr(carry, "shape") or tuple(np.shape(carry)) != want:
        raise fail(
            "initial_carry",
            carry,
            f"of shape (*batch, features) = {want} for `inputs` of shape {sx} "
            f"(time_major={time_major})",
        )


def _final_carry(zs: jax.Array, z0: jax.Array) -> jax.Array:
    """The carry after each sequence's last valid step (``z0`` for an empty sequence).

    ``gated_scan`` holds the last valid state past each sequence's length, so the final row
    is that carry.
    """
    if zs.shape[-2] > 0:
        return zs[..., -1, :]
    return jnp.broadcast_to(z0, zs.shape[:-2] + z0.shape[-1:])


def _deer_with_info(method: str, backward: str, on_info: Callable | None) -> Callable | None:
    """``gated_scan``'s stand-in that reports the solver: ``None`` unless ``on_info`` is given
    and ``method`` resolves to a parallel method (with the closed-form backward pass, which
    ``backward="auto"`` resolves to for the parallel methods).

    The stand-in solves the recurrence by :func:`gated_jax.cell.gated_deer` (``fallback``:
    under ``jit`` an unconverged solve runs the sequential loop; eagerly it raises
    :class:`~gated_jax.cell.DeerNotConverged`, as ``gated_scan`` does) and passes its
    :class:`~gated_jax.cell.DeerInfo` (one for the whole batch) to ``on_info``. With
    ``seq_lengths`` the inputs past each length are zeroed and the states there replaced by
    the last valid one: the recurrence is causal, so the states up to each length are those
    of the masked recurrence, and nothing past it reaches the outputs or the gradients.
    """
    jacobian = _JACOBIAN_OF.get(resolve_method(method))
    if on_info is None or jacobian is None or backward not in ("auto", "closed_form"):
        return None

    def solve(params, xs, z0, *, seq_lengths=None, **_):
        T = xs.shape[-2]
        if seq_lengths is not None:
            t = jnp.reshape(jnp.arange(T), (1,) * seq_lengths.ndim + (T,))
            xs = jnp.where((t < seq_lengths[..., None])[..., None], xs, 0)
        zs, info = gated_deer(params, xs, z0, jacobian=jacobian, fallback=True)
        if concrete(info.converged) is False:
            raise DeerNotConverged(
                f"GatedRNN(method={method!r}) did not converge: the per-step residual stayed "
                "above the bound. Use method='sequential' for an expanding cell (positive "
                "Lyapunov exponent); under jax.jit the sequential loop is run instead."
            )
        on_info(info)
        if seq_lengths is None or T == 0:
            return zs
        last = jnp.clip(jnp.minimum(t, seq_lengths[..., None] - 1), 0)
        held = jnp.take_along_axis(zs, last[..., None], axis=-2)
        empty = (seq_lengths == 0)[..., None, None]
        return jnp.where(empty, jnp.broadcast_to(z0[..., None, :], zs.shape), held)

    return solve


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
    backward: str = "auto",
    method: str = "sequential",
    on_info: Callable[[DeerInfo], Any] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(final_carry, outputs)`` of the cell over ``inputs`` with ``nn.RNN``'s conventions.

    ``inputs`` is ``(*batch, T, n)`` (``(T, *batch, n)`` if ``time_major``), ``carry``
    ``(*batch, m)``. ``reverse`` flips each sequence's valid part (padding stays at the end,
    ``flax.linen.recurrent.flip_sequences``), runs forward and leaves the outputs in processing
    order unless ``keep_order``. Runs on :func:`gated_jax.cell.gated_scan`'s fast path; with
    ``on_info`` and a parallel method (``method`` resolving to ``"deer"`` / ``"quasi_deer"``)
    on :func:`gated_jax.cell.gated_deer` instead, whose :class:`~gated_jax.cell.DeerInfo` is
    passed to ``on_info`` (:func:`_deer_with_info`).

    Raises:
      ValueError: ``inputs`` of another width than the cell's, ``seq_lengths`` not ints of
        the batch shape in ``[0, T]``, or ``carry`` not of shape ``(*batch, m)``.
    """
    batch = batch_shape(inputs, time_major)
    sx = tuple(np.shape(inputs))
    if sx[-1] != params.n:
        raise fail("inputs", inputs, f"of shape (*batch, time, {params.n}): the cell's input width")
    xs = jnp.moveaxis(inputs, 0, -2) if time_major else inputs
    if seq_lengths is not None:
        seq_lengths = _check_lengths(seq_lengths, batch, int(xs.shape[-2]), sx, time_major)
    _check_carry(carry, batch + (params.m,), sx, time_major)
    flip = functools.partial(flip_sequences, num_batch_dims=len(batch), time_major=False)
    if reverse:
        xs = flip(xs, seq_lengths)
    params, z0, xs, out_dtype = promote(params, carry, xs, dtype)
    solve = _deer_with_info(method, backward, on_info) or gated_scan
    zs = solve(
        params,
        xs,
        z0,
        seq_lengths=seq_lengths,
        unroll=unroll,
        remat=remat,
        backward=backward,
        method=method,
    ).astype(out_dtype)
    final = _final_carry(zs, z0).astype(out_dtype)
    if reverse and keep_order:
        zs = flip(zs, seq_lengths)
    if time_major:
        zs = jnp.moveaxis(zs, -2, 0)
    return final, zs


# --------------------------------------------------------------------------------------------
# ParallelRNN: any cell, as a pure function (carry, x) -> (carry, y), over a sequence

PARALLEL_METHODS = ("sequential", "deer", "quasi_deer", "auto")
"""``ParallelRNN``'s methods: ``"auto"`` is ``"sequential"`` until a cost model picks."""

_JACOBIAN_OF = {"deer": "full", "quasi_deer": "diagonal"}


def parallel_options(
    *,
    method: Any = "deer",
    tol: Any = None,
    max_iters: Any = None,
    window: Any = None,
    time_major: Any = False,
    return_carry: Any = False,
    reverse: Any = False,
    keep_order: Any = False,
) -> dict[str, Any]:
    """``ParallelRNN``'s options, validated (``ValueError`` naming the first bad one)."""
    out: dict[str, Any] = {"method": choice("method", method, PARALLEL_METHODS)}
    _, out["tol"], out["max_iters"] = check_solver_options("full", tol, max_iters)
    out["window"] = positive_int("window", window, allow_none=True)
    flags = (time_major, return_carry, reverse, keep_order)
    out.update({k: flag(k, v) for k, v in zip(SEQUENCE_FLAGS, flags, strict=True)})
    return out


SOLVER_OPTIONS = ("tol", "max_iters", "window")
"""``ParallelRNN``'s solver options, passed on to :func:`gated_jax.deer_scan` as they are."""


def solver_options(layer: Any) -> dict[str, Any]:
    """The layer's :data:`SOLVER_OPTIONS` (validated at construction by ``parallel_options``)."""
    return {k: getattr(layer, k) for k in SOLVER_OPTIONS}


def prepare_call(layer: Any, inputs: Any, overrides: Mapping[str, Any]):
    """``(flags, inputs, t_axis, carry_shape)`` of a ``ParallelRNN`` call: the sequence flags
    (each override, ``None``: the layer's attribute), ``inputs`` as an array (rank >= 2), its
    time axis, and the shape ``initialize_carry`` takes (``inputs`` without the time axis)."""
    flags = _call_flags(layer, overrides)
    inputs = as_numeric_array("inputs", inputs)
    batch_shape(inputs, flags["time_major"])
    t_axis = 0 if flags["time_major"] else np.ndim(inputs) - 2
    shape = np.shape(inputs)[:t_axis] + np.shape(inputs)[t_axis + 1 :]
    return flags, inputs, t_axis, shape


def _batch_of_one(cell_fn: Callable) -> Callable:
    """``cell_fn``'s new carry for one unbatched example (the cell is called on a batch of 1)."""

    def step(c, x):
        one = functools.partial(jax.tree.map, lambda a: a[None])
        return jax.tree.map(lambda a: a[0], cell_fn(one(c), one(x))[0])

    return step


def _deer_carries(cell_fn, carry, xs, jacobian: str, tol, max_iters, window):
    """All carries ``(T, B, ...)`` by :func:`gated_jax.deer_scan` per example (``vmap``)."""
    step = _batch_of_one(cell_fn)

    def one(c, x):
        return deer_scan(step, c, x, jacobian=jacobian, tol=tol, max_iters=max_iters, window=window)

    return jax.vmap(one, in_axes=(0, 1), out_axes=(1, 0))(carry, xs)


def _not_converged(method: str, info: DeerInfo) -> DeerNotConverged:
    worst = float(jnp.max(jnp.where(info.converged, 0, info.iterations)))
    return DeerNotConverged(
        f"ParallelRNN(method={method!r}) did not converge for "
        f"{int(jnp.sum(~info.converged))} of {info.converged.size} sequences (after "
        f"{worst:.0f} Newton updates): the per-step residual stayed above the bound. Raise "
        "`max_iters`, or use method='sequential' (an expanding cell: positive Lyapunov "
        "exponent). Under jax.jit the sequential scan is run instead."
    )


def _select_last(carries, carry0, lengths):
    """Each sequence's carry after its last valid step (``carry0`` for length 0)."""
    B = lengths.shape[0]

    def pick(all_c, c0):
        last = all_c[jnp.maximum(lengths - 1, 0), jnp.arange(B)]
        keep = jnp.reshape(lengths > 0, (B,) + (1,) * (last.ndim - 1))
        return jnp.where(keep, last, c0)

    return jax.tree.map(pick, carries, carry0)


def _sequential_cell(cell_fn, carry, xs):
    """``(carries, outputs)`` by ``lax.scan``, as ``nn.RNN`` runs the cell."""

    def body(c, x):
        new, y = cell_fn(c, x)
        new = jax.tree.map(lambda a, old: a.astype(old.dtype), new, c)  # as deer_scan does
        return new, (new, y)

    return lax.scan(body, carry, xs)[1]


def _solve_cell(cell_fn, carry, xs, method: str, tol, max_iters, window=None):
    """``(carries, outputs, info)``, time-major ``(T, B, ...)``; ``info`` ``None`` if sequential.

    Newton runs per sequence (``vmap``); the fallback is decided once for the batch, outside
    the ``vmap``, so that the sequential scan is compiled behind a real ``lax.cond`` (under a
    ``vmap`` a ``cond`` on a batched flag becomes a ``select`` that runs both branches).
    """
    if method in ("sequential", "auto") or xs.shape[0] == 0:
        return (*_sequential_cell(cell_fn, carry, xs), None)
    jacobian = _JACOBIAN_OF[method]
    carries, info = _deer_carries(cell_fn, carry, xs, jacobian, tol, max_iters, window)
    info = lax.stop_gradient(info)  # flags and counts: no tangents
    ok = jnp.all(info.converged)
    if concrete(ok) is False:
        raise _not_converged(method, info)
    carries = lax.cond(ok, lambda: carries, lambda: _sequential_cell(cell_fn, carry, xs)[0])
    info = info._replace(sequential=jnp.broadcast_to(~ok, info.converged.shape))
    prev = jax.tree.map(lambda c0, cs: jnp.concatenate([c0[None], cs[:-1]]), carry, carries)
    outputs = jax.vmap(lambda c, x: cell_fn(c, x)[1])(prev, xs)
    return carries, outputs, info


def run_cell(
    cell_fn: Callable,
    inputs: Any,
    carry: Any,
    *,
    method: str,
    tol: float | None = None,
    max_iters: int | None = None,
    window: int | None = None,
    seq_lengths: Any = None,
    time_major: bool = False,
    reverse: bool = False,
    keep_order: bool = False,
):
    """``(final_carry, outputs, info)`` of a cell over ``inputs`` with ``nn.RNN``'s conventions.

    The one body of ``gated_jax.nn.ParallelRNN`` and ``gated_jax.nnx.ParallelRNN``.
    ``cell_fn(carry, x) -> (carry, y)`` is the cell as a pure function (its parameters closed
    over), on batched operands ``(B, ...)``. ``inputs`` ``(*batch, T, n)`` (``(T, *batch, n)``
    time-major), ``carry`` a pytree of ``(*batch, ...)`` arrays. As in ``nn.RNN`` the cell runs
    over the padding too (outputs there are the cell's); with ``seq_lengths`` the final carry
    is each sequence's after its last valid step (its initial carry for length 0).
    ``info`` is the :class:`~gated_jax.cell.DeerInfo` of each sequence (``None`` when
    sequential).
    """
    inputs = as_numeric_array("inputs", inputs)
    batch = batch_shape(inputs, time_major)
    T, B = int(np.shape(inputs)[0 if time_major else -2]), int(np.prod(batch, dtype=int))
    xs = inputs if time_major else jnp.moveaxis(inputs, -2, 0)
    if seq_lengths is not None:
        seq_lengths = _check_lengths(seq_lengths, batch, T, tuple(np.shape(inputs)), time_major)
    flip = functools.partial(flip_sequences, num_batch_dims=len(batch), time_major=True)
    if reverse:
        xs = flip(xs, seq_lengths)
    flat = jax.tree.map(lambda a: jnp.reshape(a, (B,) + jnp.shape(a)[len(batch) :]), carry)
    xs = jnp.reshape(xs, (T, B) + xs.shape[len(batch) + 1 :])
    carries, ys, info = _solve_cell(cell_fn, flat, xs, method, tol, max_iters, window)
    if seq_lengths is None:
        final = jax.tree.map(lambda cs, c0: cs[-1] if T else c0, carries, flat)
    else:
        final = _select_last(carries, flat, jnp.reshape(seq_lengths, (B,)))
    final = jax.tree.map(lambda a: jnp.reshape(a, batch + a.shape[1:]), final)
    ys = jax.tree.map(lambda a: jnp.reshape(a, (T,) + batch + a.shape[2:]), ys)
    if reverse and keep_order:
        ys = jax.tree.map(lambda a: flip(a, seq_lengths), ys)
    if not time_major:
        ys = jax.tree.map(lambda a: jnp.moveaxis(a, 0, len(batch)), ys)
    return final, ys, info
