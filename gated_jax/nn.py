r"""Flax linen modules for the gated cell: a step cell and a fast sequence layer that takes it.

The cell computes, for an input ``x`` (``(..., n)``) and the previous state ``z`` (``(..., m)``,
``m = features``):

.. math::

    c = \sigma(x K_{ic} + b_{ic} + z K_{hc}), \qquad
    z' = c \odot z + (1 - c) \odot (x K_{ix} + b_{ix}).

:class:`GatedRNN` takes a :class:`GatedCell` as ``nn.RNN`` takes any cell
(``GatedRNN(GatedCell(features, ...))``), so every cell option is defined once, on the cell,
and the layer adds only sequence options. The older spelling ``GatedRNN(features, **options)``
still works and builds that cell. The sequence logic is written once, in the driver the NNX
front-end (:mod:`gated_jax.nnx`) runs too; these classes are thin linen front-ends over it.

Parameter tree (the same for :class:`GatedCell`, for ``nn.RNN(GatedCell(...))`` under
``'cell'`` and for :class:`GatedRNN` under ``'cell'``), with Flax's ``(in, out)`` kernels and
its map to :class:`gated_jax.cell.GatedParams` (``(out, in)`` matrices):

=============  ===========  ============================  =============================
submodule      leaf         shape                         ``GatedParams`` field
=============  ===========  ============================  =============================
``ic``         ``kernel``   ``(n, m)``                    ``w_c = ic.kernel.T``
``ic``         ``bias``     ``(m,)`` (``use_bias`` only)  ``b_c = ic.bias``
``hc``         ``kernel``   ``(m, m)`` (recurrent gate)   ``w_z = hc.kernel.T``
``hc``         ``kernel``   ``(m,)`` (``"diagonal"``)     ``w_z = hc.kernel``
``hc``         ``kernel``   ``(H, h, h)`` (``"heads"``)   ``w_z[k] = hc.kernel[k].T``
``ix``         ``kernel``   ``(n, m)``                    ``w_x = ix.kernel.T``
``ix``         ``bias``     ``(m,)`` (``use_bias`` only)  ``b_x = ix.bias``
=============  ===========  ============================  =============================

``ic``/``ix`` are "input to gate/candidate", ``hc`` "hidden to gate", as in Flax's ``MGUCell``
(``if``, ``hf``, ``in``). The recurrent path has no bias: it is summed with ``ic``'s.
``recurrent_gate=False`` leaves ``hc`` out: the minGRU cell, ``c = sigma(x K_ic + b_ic)``,
whose gate reads the input alone (``GatedParams(w_z=None)``; the tree has no ``hc``).
``recurrent_gate="diagonal"`` (each unit gates on its own past, ``hc`` a vector) and
``recurrent_gate="heads"`` with ``heads=H`` (block-diagonal, ``H`` heads of ``h = m / H``
units) are the structured gates of :class:`gated_jax.cell.GatedParams`, whose step Jacobian
is diagonal or block-diagonal: ``method="deer"`` is then exact Newton at ``O(T m)`` or
``O(T m h^2)`` per iteration. Each
submodule's leaves are exactly those of an ``nn.Dense`` of the same width. Reading and writing
``GatedParams`` is the same in linen and NNX: :func:`to_gated_params` (a tree or ``variables``
-> ``GatedParams``) and :func:`from_gated_params` (``GatedParams`` -> the cell's tree).

Gradients follow the same map: ``jax.grad`` gives ``ic.kernel`` a gradient of shape ``(n, m)``,
the transpose of ``dl/dW_c`` (``(m, n)``, the shape of ``W_c``).

Initialisers (defaults): ``kernel_init`` (``ic``, ``ix``) is LeCun normal, variance ``1/n``;
``recurrent_kernel_init`` (``hc``) is orthogonal, so ``||W_z||_2 = 1``; ``bias_init`` (the
candidate bias ``b_x``) zeros; ``gate_bias_init`` (the gate bias ``b_c``) follows
``bias_init`` unless given; ``carry_init`` zeros. These match
:func:`gated_jax.cell.init_gated_params` and Flax's ``GRUCell``. With a bfloat16 / float16
``param_dtype`` every initialiser draws in float32 and casts (LAPACK has no half-precision QR).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.errors import ScopeParamShapeError
from flax.linen import initializers
from flax.linen.linear import default_kernel_init
from flax.typing import Dtype, Initializer, PRNGKey

from gated_jax import _rnn_common as common
from gated_jax._rnn_common import check_step_shapes, promote
from gated_jax._validate import (
    Shown,
    as_numeric_array,
    brief,
    check_dtype,
    check_initializer,
    fail,
    flag,
    positive_int,
    recurrent_structure,
)
from gated_jax.cell import GatedParams, gated_step

__all__ = ["GatedCell", "GatedRNN", "ParallelRNN", "to_gated_params", "from_gated_params"]


# --------------------------------------------------------------------------------------------
# the parameter map


def to_gated_params(tree: Any) -> GatedParams:
    r"""``GatedParams`` (``(out, in)`` matrices) from a linen cell's parameter tree.

    .. math::

        W_c = K_{ic}^\top, \quad W_z = K_{hc}^\top, \quad W_x = K_{ix}^\top, \quad
        b_c = b_{ic}, \quad b_x = b_{ix}.

    A tree without ``hc`` (``GatedCell(..., recurrent_gate=False)``) gives ``w_z=None``.

    Args:
      tree: the cell's params, the params of an ``nn.RNN(GatedCell)`` / :class:`GatedRNN`
        (the cell under ``'cell'``), or the whole ``variables`` (under ``'params'``).

    Returns:
      ``GatedParams`` with ``b_c = b_x = None`` when the tree has no bias, ``w_z = None``
      when it has no ``hc``.

    Raises:
      ValueError: ``tree`` is not a cell's tree (no ``ic`` / ``ix`` kernels) or its shapes
        disagree.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.nn import GatedCell, GatedRNN, to_gated_params
      >>> x = jnp.ones((2, 5, 3))
      >>> variables = GatedRNN(GatedCell(4)).init(jax.random.key(0), x)
      >>> p = to_gated_params(variables)
      >>> p.w_x.shape, p.w_z.shape, p.b_c
      ((4, 3), (4, 4), None)

    References:
      The parameter table in this module's docstring; :mod:`gated_jax.nnx` has the same
      function for NNX modules.
    """
    return common.to_tree(tree, "tree")


def from_gated_params(params: GatedParams) -> dict[str, Any]:
    """The linen cell parameter tree (``{'ic': ..., 'hc': ..., 'ix': ...}``) of ``params``.

    The inverse of :func:`to_gated_params`: ``ic.kernel = w_c.T``, ``hc.kernel = w_z.T``,
    ``ix.kernel = w_x.T``, ``ic.bias = b_c``, ``ix.bias = b_x``; ``w_z=None`` (the minGRU
    cell) gives a tree without ``hc``, for ``GatedCell(..., recurrent_gate=False)``.

    Args:
      params: a :class:`gated_jax.cell.GatedParams` with both biases or neither
        (``GatedCell.use_bias`` covers the two together).

    Returns:
      The cell's tree. Wrap it as ``{'params': tree}`` for a :class:`GatedCell`,
      ``{'params': {'cell': tree}}`` for ``nn.RNN(GatedCell)`` or :class:`GatedRNN`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import init_gated_params
      >>> from gated_jax.nn import GatedCell, GatedRNN, from_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4, use_bias=True)
      >>> tree = from_gated_params(p)
      >>> sorted(tree), tree["ic"]["kernel"].shape
      (['hc', 'ic', 'ix'], (3, 4))
      >>> GatedRNN(GatedCell(4, use_bias=True)).apply(
      ...     {"params": {"cell": tree}}, jnp.ones((2, 5, 3))).shape
      (2, 5, 4)
    """
    return common.from_tree(params, "params")


# --------------------------------------------------------------------------------------------
# modules


class _DenseParams(nn.Module):
    """The parameters of an ``nn.Dense`` (``kernel (in, out)``, optional ``bias (out,)``).

    Returns them instead of applying them, like Flax's ``linen.recurrent.DenseParams``, so the
    cell can hand them to the functional core.
    """

    features: int
    use_bias: bool
    kernel_init: Initializer
    bias_init: Initializer
    param_dtype: Dtype

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
        k = self.param(
            "kernel",
            common.half_safe(self.kernel_init),
            (in_features, self.features),
            self.param_dtype,
        )
        if not self.use_bias:
            return k, None
        b = self.param("bias", common.half_safe(self.bias_init), (self.features,), self.param_dtype)
        return k, b


class _KernelParam(nn.Module):
    """One ``kernel`` parameter of a given shape: the structured ``hc`` kernel ``(m,)`` or
    ``(H, h, h)`` (a dense one is :class:`_DenseParams`' ``(m, m)``, the same tree)."""

    shape: tuple[int, ...]
    kernel_init: Initializer
    param_dtype: Dtype

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("kernel", self.kernel_init, self.shape, self.param_dtype)


_CELL_OPTIONS = (
    "features",
    "use_bias",
    "recurrent_gate",
    "heads",
    "kernel_init",
    "recurrent_kernel_init",
    "bias_init",
    "gate_bias_init",
    "carry_init",
    "dtype",
    "param_dtype",
)


class GatedCell(nn.RNNCellBase):
    r"""The gated cell as a linen ``RNNCellBase``: works in ``nn.RNN``, :class:`GatedRNN`, ...

    .. math::

        c = \sigma(W_c x + W_z z + b_c), \qquad z' = c \odot z + (1 - c) \odot (W_x x + b_x)

    with ``W_c = ic.kernel.T``, ``W_z = hc.kernel.T``, ``W_x = ix.kernel.T`` (the table in the
    module docstring). ``c`` has the state's dimension ``m = features``; the output is the new
    state. One step is :func:`gated_jax.cell.gated_step`.

    The gate bias is the vanishing/exploding lever: the one-step Jacobian is
    ``diag(c) + diag((z - u) c (1 - c)) W_z``, so a positive ``b_c`` (``gate_bias_init``, e.g.
    ``constant(2.0)``: ``c ~ 0.88`` at initialisation) keeps ``c`` near 1, the state near its
    past and the gradient through time near the identity (long memory); a negative one makes
    the cell forget, and the gradient vanishes like ``prod c``. Flax's ``MGUCell`` has the same
    option as ``forget_bias_init``.

    Attributes:
      features: state width ``m`` (a positive int).
      use_bias: add the biases ``b_c`` (``ic.bias``) and ``b_x`` (``ix.bias``); the default
        ``False`` is the cell without biases.
      recurrent_gate: ``True`` (default) or ``"dense"`` gives the gate the recurrent kernel
        ``hc`` (``W_z``, ``(m, m)``); ``False`` leaves it out, ``c = sigma(W_c x + b_c)``: the
        minGRU cell (``GatedParams(w_z=None)``), whose recurrence is linear in the state, so
        ``GatedRNN(method="deer")`` solves it with one exact associative scan;
        ``"diagonal"``: ``hc.kernel`` ``(m,)``, ``c = sigma(W_c x + w_z z + b_c)``;
        ``"heads"``: ``hc.kernel`` ``(H, h, h)`` with ``heads=H`` (block-diagonal ``W_z``).
        The structured gates make ``method="deer"`` exact Newton at ``O(T m)`` /
        ``O(T m h^2)`` per iteration.
      heads: the number of heads ``H`` with ``recurrent_gate="heads"`` (a positive int
        dividing ``features``); ``None`` otherwise.
      kernel_init: initialiser of the input kernels ``ic``, ``ix`` (default LeCun normal).
      recurrent_kernel_init: initialiser of ``hc`` (default orthogonal; for the structured
        gates the default is uniform on ``[-1, 1]`` (diagonal) or an orthogonal draw per head,
        as :func:`gated_jax.cell.init_gated_params`; unused without ``recurrent_gate``).
      bias_init: initialiser of the candidate bias ``b_x`` (default zeros), and of the gate
        bias when ``gate_bias_init`` is ``None``.
      gate_bias_init: initialiser of the gate bias ``b_c`` (default ``None``: ``bias_init``).
      carry_init: initialiser of the carry in :meth:`initialize_carry` (default zeros).
      dtype: computation dtype (default: promoted from inputs, carry and parameters). The new
        carry keeps the carry's dtype (``param_dtype`` by default), so ``nn.RNN``'s scan
        carry keeps its type under any input dtype.
      param_dtype: parameter (and carry) dtype, default float32; bfloat16 / float16 parameters
        are drawn in float32 and cast.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> from gated_jax.nn import GatedCell
      >>> x = jnp.ones((2, 5, 3))                      # (batch, time, n)
      >>> rnn = nn.RNN(GatedCell(features=4))
      >>> variables = rnn.init(jax.random.key(0), x)
      >>> rnn.apply(variables, x).shape
      (2, 5, 4)
      >>> cell = GatedCell(4, use_bias=True, gate_bias_init=nn.initializers.constant(2.0))
      >>> v = cell.init(jax.random.key(0), jnp.zeros((4,)), jnp.zeros((3,)))
      >>> v["params"]["ic"]["bias"]
      Array([2., 2., 2., 2.], dtype=float32)
      >>> mingru = GatedCell(4, recurrent_gate=False)      # no 'hc': c = sigmoid(W_c x)
      >>> sorted(mingru.init(jax.random.key(0), jnp.zeros((4,)), jnp.zeros((3,)))["params"])
      ['ic', 'ix']
      >>> heads = GatedCell(4, recurrent_gate="heads", heads=2)  # block-diagonal W_z
      >>> v = heads.init(jax.random.key(0), jnp.zeros((4,)), jnp.zeros((3,)))
      >>> v["params"]["hc"]["kernel"].shape
      (2, 2, 2)

    Raises:
      ValueError: for a non-bool flag, a non-positive ``features``, a ``recurrent_gate`` or
        ``heads`` that names no structure, or given parameters that do not match
        ``recurrent_gate`` (a tree with ``hc`` and ``recurrent_gate=False``, without it and a
        gate, or an ``hc`` of another structure), naming the option.

    References:
      Zhou et al., "Minimal gated unit for recurrent neural networks" (2016), the ``MGUCell``
      of Flax this cell's gate follows. L. Feng, F. Tung, M. O. Ahmed, Y. Bengio,
      H. Hajimirsadeghi, "Were RNNs All We Needed?" (2024): minGRU, ``recurrent_gate=False``.
    """

    features: int
    use_bias: bool = False
    recurrent_gate: bool | str = True
    heads: int | None = None
    kernel_init: Initializer = default_kernel_init
    recurrent_kernel_init: Initializer = common.orthogonal
    bias_init: Initializer = initializers.zeros_init()
    gate_bias_init: Initializer | None = None
    carry_init: Initializer = initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        positive_int("features", self.features)
        flag("use_bias", self.use_bias)
        recurrent_structure(self.recurrent_gate, self.heads, self.features)
        for name in ("kernel_init", "recurrent_kernel_init", "bias_init", "carry_init"):
            check_initializer(name, getattr(self, name))
        check_initializer("gate_bias_init", self.gate_bias_init, allow_none=True)
        check_dtype("dtype", self.dtype, allow_none=True)
        check_dtype("param_dtype", self.param_dtype)
        super().__post_init__()

    def setup(self) -> None:
        gate_bias = self.bias_init if self.gate_bias_init is None else self.gate_bias_init
        m, dt = self.features, self.param_dtype
        self.ic = _DenseParams(m, self.use_bias, self.kernel_init, gate_bias, dt)
        kind, H = recurrent_structure(self.recurrent_gate, self.heads, m)
        shape = common.recurrent_kernel_shape(kind, H, m)
        hc: Any = None
        if kind == "dense":
            hc = _DenseParams(m, False, self.recurrent_kernel_init, self.bias_init, dt)
        elif shape is not None:
            init = common.recurrent_init(self.recurrent_kernel_init, kind)
            hc = _KernelParam(shape, init, dt)
        if hc is not None:
            self.hc = hc
        self.ix = _DenseParams(m, self.use_bias, self.kernel_init, self.bias_init, dt)

    def gated_params(self, in_features: int) -> GatedParams:
        """This cell's parameters as ``GatedParams`` (created on first use, ``(out, in)``)."""
        kind, H = recurrent_structure(self.recurrent_gate, self.heads, self.features)
        shape = common.recurrent_kernel_shape(kind, H, self.features)
        if self.is_initializing():
            m = self.features
            common.check_param_memory("features", m, in_features, m, self.param_dtype, shape)
        else:
            given = self.variables.get("params", {})
            if "ic" in given:
                hc = given.get("hc", {}).get("kernel")
                hc_shape = None if hc is None else tuple(np.shape(hc))
                common.check_gate_matches(self.recurrent_gate, "hc" in given, hc_shape, shape)
        try:
            k_c, b_c = self.ic(in_features)
            k_z = None
            if kind == "dense":
                k_z = self.hc(self.features)[0]
            elif kind is not None:
                k_z = self.hc()
            k_x, b_x = self.ix(in_features)
        except ScopeParamShapeError:
            raise self._shape_mismatch(in_features) from None
        w_z = None if k_z is None else common.loop_weights(k_z)
        return GatedParams(w_x=k_x.T, w_c=k_c.T, w_z=w_z, b_c=b_c, b_x=b_x)

    def _shape_mismatch(self, in_features: int) -> Exception:
        """The error for given parameters of another input or state width than asked for."""
        given = self.variables.get("params", {}).get("ic", {}).get("kernel")
        have = tuple(np.shape(given)) if given is not None else None
        if have is not None and have[0] != in_features:
            return fail(
                "inputs",
                Shown(f"array of shape (..., {in_features})"),
                f"of width {have[0]}, the input width of the given parameters",
            )
        return fail(
            "features",
            self.features,
            f"{have[1] if have else '?'}, the state width of the given parameters",
        )

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step.

        Args:
          carry: the state ``z``, ``(*batch, m)``.
          inputs: ``x``, ``(*batch, n)``.

        Returns:
          ``(z', z')``: the new carry and the output (the same array).
        """
        inputs = as_numeric_array("inputs", inputs)
        carry = as_numeric_array("carry", carry)
        check_step_shapes(carry, inputs, self.features)
        if np.shape(inputs)[-1] < 1:
            raise fail("inputs", inputs, "of shape (*batch, n) with n >= 1")
        params = self.gated_params(int(np.shape(inputs)[-1]))
        params, z, x, out_dtype = promote(params, carry, inputs, self.dtype)
        new = gated_step(params, z, x).astype(out_dtype)
        return new, new

    @nn.nowrap
    def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> jax.Array:
        """``carry_init(rng, (*batch, features), param_dtype)``, ``input_shape = (*batch, n)``."""
        shape = _input_shape(input_shape)
        return self.carry_init(rng, shape[:-1] + (self.features,), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


def _input_shape(input_shape: Any) -> tuple[int, ...]:
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) >= 1
    ok = ok and all(isinstance(d, (int, np.integer)) and d >= 0 for d in input_shape)
    if not ok:
        raise fail("input_shape", input_shape, "a tuple (*batch, in_features) of ints, rank >= 1")
    return tuple(int(d) for d in input_shape)


class _GatedRNNFields(nn.Module):
    """The dataclass fields of :class:`GatedRNN`, whose constructor reads both spellings.

    Flax makes every linen module a dataclass and generates its ``__init__``; the fields live
    here so that :meth:`GatedRNN.__init__`, defined in the class body, can turn the first
    spelling into a cell and then call this generated ``__init__`` (``super().__init__``).
    """

    cell: GatedCell
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = False
    unroll: int = 1
    remat: bool | int = False
    backward: str = "auto"
    method: str = "sequential"


class GatedRNN(_GatedRNNFields):
    r"""A :class:`GatedCell` over a whole sequence, on :func:`gated_jax.cell.gated_scan`.

    Takes its cell as ``nn.RNN`` does, ``GatedRNN(GatedCell(features, ...))``, with the same
    sequence options and the same parameter tree (the cell's parameters under ``'cell'``), so
    variables initialised or trained with one apply unchanged to the other. For every valid
    step ``t`` of each sequence

    .. math::

        z_t = c_t \odot z_{t-1} + (1 - c_t) \odot (W_x x_t + b_x), \qquad
        c_t = \sigma(W_c x_t + W_z z_{t-1} + b_c),

    with the input projections hoisted out of the time loop and the closed-form BPTT of
    :mod:`gated_jax.cell` as the backward pass. With ``GatedCell(..., recurrent_gate=False)``
    (or ``GatedRNN(features, recurrent_gate=False)``) ``W_z`` is absent: the minGRU cell,
    which ``method="deer"`` / ``"quasi_deer"`` run as one exact associative scan.

    Two spellings construct it. ``GatedRNN(cell, **sequence_options)`` is the model of
    ``nn.RNN``; ``GatedRNN(features, **cell_options, **sequence_options)`` (the first
    spelling, kept for existing code) builds ``GatedCell(features, **cell_options,
    parent=None)``. Both are read by :meth:`__init__`, an ordinary constructor in the class
    body that calls the dataclass ``__init__`` Flax generates for the fields, so ``clone``,
    ``dataclasses.replace`` and ``__post_init__`` work as for any linen module. Cell options
    beside a cell, or the first spelling with positional options after ``features``, raise
    ``TypeError``. The sequence logic (options, carry, ``seq_lengths``, ``reverse``,
    ``method``, ``return_carry``) is the one driver the NNX :class:`gated_jax.nnx.GatedRNN`
    runs too.

    Differences from ``nn.RNN`` (deliberate; equal everywhere else): with ``seq_lengths``,
    outputs at padded steps hold the sequence's last valid state (``nn.RNN`` keeps running the
    cell over the padding); a sequence of length 0 returns its initial carry; ``seq_lengths``
    with ``return_carry`` works with several batch dims. Inside another module's
    ``@nn.compact`` method, a cell built there belongs to that module (a Flax rule for modules
    passed as attributes, the same for ``nn.RNN``): write ``GatedCell(..., parent=None)`` to
    keep its parameters under ``<rnn>/cell``, or use ``GatedRNN(features, ...)``, which does.

    Attributes:
      cell: the :class:`GatedCell` (or, first spelling, its ``features``; cell options are
        then keywords).
      time_major: inputs ``(time, *batch, n)`` instead of ``(*batch, time, n)``.
      return_carry: return ``(carry, outputs)`` instead of ``outputs``.
      reverse: run each sequence's valid part from its end (padding stays at the end).
      keep_order: with ``reverse``, return the outputs in input order.
      unroll: steps per loop iteration of the scan (a positive int).
      remat: ``True`` (or a block length) recomputes the forward states in the backward pass
        instead of storing them (``gated_scan(remat=...)``): less memory on long sequences.
      backward: ``"auto"`` (default: the faster of ``"closed_form"`` and ``"stepwise"`` by
        :func:`gated_jax.cell.resolve_backward`'s rule), ``"closed_form"`` (reverse mode:
        ``grad``, ``vjp``), ``"autodiff"`` or ``"stepwise"`` (JAX differentiates the scan;
        also forward mode: ``jvp``, ``jacfwd``), as in :func:`gated_jax.cell.gated_scan`.
      method: how the recurrence is solved over time, ``gated_scan(method=...)``:
        ``"sequential"`` (default), ``"deer"`` / ``"quasi_deer"`` (Newton over the whole
        sequence, parallel in time; need ``backward="closed_form"``) or ``"auto"``. When a
        parallel method runs and the ``'intermediates'`` collection is mutable
        (``apply(..., mutable="intermediates")``), the layer solves by
        :func:`gated_jax.cell.gated_deer` and sows its :class:`~gated_jax.cell.DeerInfo`
        (iterations, residuals, converged, sequential; one for the batch) as ``deer_info``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> from gated_jax.nn import GatedCell, GatedRNN
      >>> x = jnp.ones((2, 5, 3))
      >>> variables = nn.RNN(GatedCell(4)).init(jax.random.key(0), x)
      >>> GatedRNN(GatedCell(4)).apply(variables, x).shape   # the same weights, fast path
      (2, 5, 4)
      >>> carry, ys = GatedRNN(GatedCell(4), return_carry=True).apply(
      ...     variables, x, seq_lengths=jnp.array([5, 2]))
      >>> bool(jnp.all(carry[1] == ys[1, 1]))                # the last valid state
      True
      >>> mingru = GatedRNN(4, recurrent_gate=False, method="deer")  # one parallel scan
      >>> mingru.apply(mingru.init(jax.random.key(0), x), x).shape
      (2, 5, 4)

    Raises:
      TypeError: ``cell`` is not a :class:`GatedCell` (nor its ``features``), or cell options
        are given beside a cell.
      ValueError: an invalid sequence option (a non-bool flag, ``unroll < 1``, an unknown
        ``backward`` / ``method``), naming it; at call time, inputs, ``initial_carry`` or
        ``seq_lengths`` of the wrong shape.

    References:
      ``flax.linen.RNN`` (https://flax.readthedocs.io/en/latest/api_reference/flax.linen/
      layers.html#flax.linen.RNN), whose call options and parameter layout this layer
      follows. L. Feng, F. Tung, M. O. Ahmed, Y. Bengio, H. Hajimirsadeghi, "Were RNNs All We
      Needed?" (2024): the minGRU cell. Y. H. Lim, Q. Zhu, J. Selfridge, M. F. Kasim,
      "Parallelizing non-linear sequential models over the sequence length" (ICLR 2024): DEER,
      ``method="deer"``.
    """

    def __init__(self, cell: GatedCell | int | None = None, *args: Any, **kwargs: Any) -> None:
        """``GatedRNN(cell, **sequence_options)`` or ``GatedRNN(features, **options)``.

        The first spelling builds ``GatedCell(features, **cell_options, parent=None)`` from
        the cell options among the keywords; the rest are the layer's fields. Flax's
        ``clone`` and ``dataclasses.replace`` pass the cell by keyword and go through here too.

        Raises:
          TypeError: cell options beside a cell, both ``cell`` and ``features``, or the first
            spelling with positional options.
        """
        cell, kwargs = _first_spelling(cell, args, kwargs)
        super().__init__(cell, *args, **kwargs)  # type: ignore[arg-type]

    # inspect.signature (Sphinx, IDEs, help) shows the fields' constructor, as for any module.
    __init__.__wrapped__ = _GatedRNNFields.__init__  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        if not isinstance(self.cell, GatedCell):
            raise fail(
                "cell",
                brief(self.cell),
                "a gated_jax.nn.GatedCell (or its features, a positive int)",
                error=TypeError,
            )
        common.sequence_options(**{k: getattr(self, k) for k in common.SEQUENCE_OPTIONS})
        super().__post_init__()

    def _sows_info(self) -> bool:
        """Whether a call sows the solver's info: ``'intermediates'`` mutable, not ``init``."""
        return self.is_mutable_collection("intermediates") and not self.is_initializing()

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: jax.Array | None = None,
        init_key: PRNGKey | None = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ):
        """Run over ``inputs``.

        Args:
          inputs: ``(*batch, T, n)`` (``(T, *batch, n)`` if ``time_major``); a nested list or
            NumPy array of floats is converted.
          initial_carry: ``(*batch, m)``, converted as ``inputs`` is; default
            ``cell.initialize_carry(init_key, ...)``.
          init_key: key of a random ``carry_init`` (default ``jax.random.key(0)``).
          seq_lengths: ``(*batch,)`` ints in ``[0, T]``: steps past a sequence's length are
            padding and hold its last valid state.
          return_carry, time_major, reverse, keep_order: override the attributes (``None``:
            use the attribute).

        Returns:
          The outputs ``(*batch, T, m)`` (time axis where the input had it), or
          ``(carry, outputs)`` with ``return_carry``.
        """
        key = jax.random.key(0) if init_key is None else init_key
        sow = lambda info: self.sow("intermediates", "deer_info", info)
        return common.run_sequence(
            self,
            inputs,
            cell_params=self.cell.gated_params,
            new_carry=lambda input_shape: self.cell.initialize_carry(key, input_shape),
            in_features=None,
            dtype=self.cell.dtype,
            initial_carry=initial_carry,
            seq_lengths=seq_lengths,
            overrides=dict(
                return_carry=return_carry,
                time_major=time_major,
                reverse=reverse,
                keep_order=keep_order,
            ),
            on_info=sow if self._sows_info() else None,
        )


def _first_spelling(
    cell: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """``(cell, layer_kwargs)``: the cell built from ``GatedRNN(features, **cell_options)``.

    A module passes through (with no cell option beside it); ``None`` passes through too, for
    ``GatedRNN(cell=...)`` and for the field check in ``__post_init__``.
    """
    options = {k: v for k, v in kwargs.items() if k in _CELL_OPTIONS}
    rest = {k: v for k, v in kwargs.items() if k not in _CELL_OPTIONS}
    if "features" in options:
        if cell is not None:
            raise TypeError("GatedRNN got both a positional `cell` and `features`")
        cell = options.pop("features")
    if cell is None or isinstance(cell, nn.Module):
        if options:
            raise common.cell_options_beside_cell(sorted(options))
        return cell, rest
    if args:
        raise TypeError(
            f"GatedRNN({cell!r}, ...): give cell options by keyword, or pass "
            "GatedRNN(GatedCell(...), ...) and then the sequence options"
        )
    return GatedCell(cell, **options, parent=None), rest


class ParallelRNN(nn.Module):
    r"""Any Flax RNN cell over a sequence, in parallel over time (DEER) or sequentially.

    ``ParallelRNN(cell)`` is a drop-in for ``nn.RNN(cell)``: the same variables (the cell's
    parameters under ``'cell'``, so ``nn.RNN(cell).init(...)`` variables apply unchanged), the
    same call options and the same outputs, for any ``nn.RNNCellBase`` with one feature axis
    (``GRUCell``, ``LSTMCell``, ``OptimizedLSTMCell``, ``MGUCell``, ``SimpleCell``,
    :class:`GatedCell`, a cell of your own). With ``method="deer"`` the carries

    .. math::

        \text{carry}_t = \text{cell}(\text{carry}_{t-1}, x_t)[0]

    are solved for all ``t`` at once by :func:`gated_jax.deer_scan` (Newton over the whole
    sequence, one associative scan per iteration, Jacobians by autodiff of the cell, per
    sequence: ``vmap`` over the batch), then the outputs ``y_t = cell(carry_{t-1}, x_t)[1]``
    in one parallel evaluation. Gradients are the sequential scan's, by implicit
    differentiation at the solution. Convergence is judged by the per-step residual (see
    :func:`gated_jax.cell.gated_deer`); eagerly an unconverged solve raises
    :class:`~gated_jax.cell.DeerNotConverged`, under ``jax.jit`` the sequential scan is run
    instead (for the whole batch, when any sequence did not converge). Each parallel call sows
    its :class:`~gated_jax.cell.DeerInfo` (one per sequence) in the ``'intermediates'``
    collection as ``deer_info``, Flax's idiom for intermediates: ``ys, state =
    layer.apply(variables, x, mutable="intermediates")``, then
    ``state["intermediates"]["deer_info"][0].iterations`` (nothing is stored when the
    collection is not mutable). DEER pays off on
    long sequences of small, contractive cells (few iterations); on an expanding cell (positive
    Lyapunov exponent) it needs up to ``T`` iterations: use ``"sequential"``. ``init`` runs the
    cell sequentially (the same outputs, without compiling the solver).

    The cell runs over the padding too, as in ``nn.RNN`` (outputs there are the cell's); with
    ``seq_lengths`` and ``return_carry`` the carry is each sequence's after its last valid
    step. Differences from ``nn.RNN``: a sequence of length 0 returns its initial carry
    (``nn.RNN`` returns the carry after the last step), and several batch dims work with
    ``seq_lengths``.

    Attributes:
      cell: an ``nn.RNNCellBase`` (one feature axis).
      method: ``"deer"`` (default: full autodiff Jacobians, ``(T, d, d)`` per sequence with
        ``d`` the carry's size), ``"quasi_deer"`` (their exact diagonals: ``O(T d)`` memory,
        more iterations), ``"sequential"`` (``lax.scan``, what ``nn.RNN`` does) or ``"auto"``
        (``"sequential"`` for now: choosing by a cost model is future work).
      tol, max_iters, window: the solver's, as :func:`gated_jax.deer_scan` (``None``: its
        defaults; ``window=T``, the sequence length, keeps every update wide: fewer, longer
        updates on cells near ``lambda = 0``).
      time_major, return_carry, reverse, keep_order: as ``nn.RNN``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> from gated_jax.nn import ParallelRNN
      >>> x = jax.random.normal(jax.random.key(1), (2, 16, 3))
      >>> variables = nn.RNN(nn.GRUCell(4)).init(jax.random.key(0), x)
      >>> ys = ParallelRNN(nn.GRUCell(4)).apply(variables, x)
      >>> bool(jnp.max(jnp.abs(ys - nn.RNN(nn.GRUCell(4)).apply(variables, x))) < 1e-4)
      True

    Raises:
      ValueError: an invalid option, naming it (at construction), or inputs / ``seq_lengths``
        of the wrong shape (at call time).
      gated_jax.cell.DeerNotConverged: eagerly, when Newton did not converge.

    References:
      ``flax.linen.RNN``, whose options and parameter layout this layer follows. Y. H. Lim
      et al., "Parallelizing non-linear sequential models over the sequence length" (DEER),
      ICLR 2024; X. Gonzalez et al., "Towards scalable and stable parallelization of nonlinear
      RNNs" (quasi-DEER), NeurIPS 2024.
    """

    cell: nn.RNNCellBase
    method: str = "deer"
    tol: float | None = None
    max_iters: int | None = None
    window: int | None = None
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.cell, nn.RNNCellBase):
            raise fail("cell", self.cell, "a flax.linen.RNNCellBase (GRUCell, LSTMCell, ...)")
        common.parallel_options(
            method=self.method,
            tol=self.tol,
            max_iters=self.max_iters,
            window=self.window,
            time_major=self.time_major,
            return_carry=self.return_carry,
            reverse=self.reverse,
            keep_order=self.keep_order,
        )
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: Any,
        *,
        initial_carry: Any = None,
        init_key: PRNGKey | None = None,
        seq_lengths: Any = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ):
        """Apply the cell over ``inputs`` (``nn.RNN.__call__``'s arguments and results)."""
        overrides = dict(
            return_carry=return_carry, time_major=time_major, reverse=reverse, keep_order=keep_order
        )
        flags, inputs, t_axis, shape = common.prepare_call(self, inputs, overrides)
        if initial_carry is None:
            key = jax.random.key(0) if init_key is None else init_key
            initial_carry = self.cell.initialize_carry(key, shape)
        method = self.method
        if self.is_initializing():  # create the cell's variables, as nn.RNN's first step does
            self.cell(initial_carry, jnp.take(inputs, 0, axis=t_axis))
            method = "sequential"  # the same outputs; init need not compile the solver
        cell_def, variables = self.cell.unbind()
        carry, outputs, info = common.run_cell(
            lambda c, x: cell_def.apply(variables, c, x),
            inputs,
            initial_carry,
            method=method,
            **common.solver_options(self),
            seq_lengths=seq_lengths,
            time_major=flags["time_major"],
            reverse=flags["reverse"],
            keep_order=flags["keep_order"],
        )
        if info is not None:
            self.sow("intermediates", "deer_info", info)
        return (carry, outputs) if flags["return_carry"] else outputs
