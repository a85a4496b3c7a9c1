r"""Flax NNX modules for the gated cell: a step cell and a fast sequence layer that takes it.

The same cell as :mod:`gated_jax.nn`, with NNX's conventions (``in_features`` and
``hidden_features`` given up front, parameters created eagerly from ``rngs``):

.. math::

    c = \sigma(x K_{ic} + b_{ic} + z K_{hc}), \qquad
    z' = c \odot z + (1 - c) \odot (x K_{ix} + b_{ix}).

:class:`GatedRNN` takes a :class:`GatedCell` as ``nnx.RNN`` does
(``GatedRNN(GatedCell(n, m, rngs=...))``); ``GatedRNN(n, m, rngs=..., **cell_options)`` still
works and builds that cell; both layers run one sequence driver, so the linen and NNX
``GatedRNN`` agree option for option. The carry initialiser is an argument of
:meth:`GatedCell.initialize_carry` (and of :meth:`GatedRNN.__call__`), not module state, as
Flax's NNX cells recommend.

State (``nnx.state(cell, nnx.Param)``): three ``nnx.Linear`` submodules with the linen cell's
names and leaves, so weights move between the APIs leaf by leaf (Flax kernels are
``(in, out)``; :class:`gated_jax.cell.GatedParams` is ``(out, in)``):

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

``recurrent_gate=False`` leaves ``hc`` out (``cell.hc`` is ``None``): the minGRU cell,
``c = sigma(x K_ic + b_ic)``, ``GatedParams(w_z=None)``. ``recurrent_gate="diagonal"`` and
``recurrent_gate="heads"`` with ``heads=H`` give the structured gates (``hc`` a module with the
one ``kernel`` leaf of shape ``(m,)`` or ``(H, h, h)``), as in :mod:`gated_jax.nn`.

Reading and writing ``GatedParams`` is the same as in linen: :func:`to_gated_params` (a
module or its state -> ``GatedParams``) and :func:`from_gated_params` (``GatedParams`` -> the
cell's tree, the same nested dict linen uses, for ``nnx.update(layer.cell, tree)``);
:func:`load_gated_params` writes into a module after checking every shape.

Initialisers (defaults): ``kernel_init`` LeCun normal (variance ``1/n``),
``recurrent_kernel_init`` orthogonal, ``bias_init`` zeros (candidate bias, and gate bias unless
``gate_bias_init`` is given), carry zeros: the same as :class:`gated_jax.nn.GatedCell` and
:func:`gated_jax.cell.init_gated_params`. Half-precision parameters are drawn in float32 and
cast.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import rnglib
from flax.nnx.nn import initializers
from flax.nnx.nn.linear import default_kernel_init
from flax.typing import Dtype, Initializer

from gated_jax import _rnn_common as common
from gated_jax._rnn_common import check_step_shapes, promote
from gated_jax._validate import (
    as_numeric_array,
    brief,
    check_dtype,
    check_initializer,
    fail,
    flag,
    recurrent_structure,
    size,
)
from gated_jax.cell import GatedParams, gated_step

__all__ = [
    "GatedCell",
    "GatedRNN",
    "ParallelRNN",
    "from_gated_params",
    "load_gated_params",
    "to_gated_params",
]

_ZEROS = initializers.zeros_init()


def _carry_key(rngs) -> jax.Array:
    """A key from ``Rngs`` (its ``carry`` stream), an ``RngStream``, a key, or ``None``.

    ``None`` gives ``jax.random.key(0)``, as linen's ``nn.RNN`` does without ``init_key``; the
    default zeros carry ignores the key.
    """
    if rngs is None:
        return jax.random.key(0)
    if isinstance(rngs, nnx.Rngs):
        return rngs.carry()
    if isinstance(rngs, rnglib.RngStream):
        return rngs()
    if isinstance(rngs, (jax.Array, jax.core.Tracer)):
        return rngs
    raise fail("rngs", rngs, "nnx.Rngs, an nnx.RngStream, a PRNG key or None", error=TypeError)


def _cell_of(module: Any, name: str) -> GatedCell:
    if isinstance(module, GatedCell):
        return module
    cell = getattr(module, "cell", None)
    if isinstance(cell, GatedCell):
        return cell
    raise fail(
        name,
        brief(module),
        "a gated_jax.nnx.GatedCell, or a module holding one as `cell` (GatedRNN, nnx.RNN)",
        error=TypeError,
    )


def to_gated_params(source: Any) -> GatedParams:
    r"""``GatedParams`` (``(out, in)`` matrices) of an NNX cell or of its state.

    .. math::

        W_c = K_{ic}^\top, \quad W_z = K_{hc}^\top, \quad W_x = K_{ix}^\top, \quad
        b_c = b_{ic}, \quad b_x = b_{ix}.

    Args:
      source: a :class:`GatedCell`, a module holding one as ``cell`` (:class:`GatedRNN`,
        ``nnx.RNN(GatedCell)``), or a cell's state / pure dict (``nnx.state(cell, nnx.Param)``,
        the tree :func:`from_gated_params` returns).

    Returns:
      ``GatedParams``; ``b_c = b_x = None`` without biases, ``w_z = None`` without ``hc``
      (``recurrent_gate=False``).

    Examples:
      >>> from flax import nnx
      >>> from gated_jax.nnx import GatedCell, GatedRNN, to_gated_params
      >>> layer = GatedRNN(GatedCell(3, 4, rngs=nnx.Rngs(0)))
      >>> p = to_gated_params(layer)
      >>> p.w_x.shape, p.w_z.shape, p.b_c
      ((4, 3), (4, 4), None)

    References:
      :func:`gated_jax.nn.to_gated_params`, the same map for linen trees.
    """
    if isinstance(source, nnx.Module):
        source = nnx.state(_cell_of(source, "source"), nnx.Param)
    if isinstance(source, nnx.State):
        source = nnx.to_pure_dict(source)
    return common.to_tree(source, "source")


def from_gated_params(params: GatedParams) -> dict[str, Any]:
    """The cell's parameter tree of ``params``: ``{'ic': ..., 'hc': ..., 'ix': ...}``.

    The same nested dict as :func:`gated_jax.nn.from_gated_params` (``ic.kernel = w_c.T``,
    ...), which ``nnx.update`` accepts: ``nnx.update(layer.cell, from_gated_params(p))``.
    ``nnx.update`` does not check shapes; :func:`load_gated_params` does.

    Args:
      params: a :class:`gated_jax.cell.GatedParams`, both biases or neither.

    Returns:
      The tree, arrays in ``params``' dtype.

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from gated_jax.cell import init_gated_params
      >>> from gated_jax.nnx import GatedCell, from_gated_params, to_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4)
      >>> cell = GatedCell(3, 4, rngs=nnx.Rngs(1))
      >>> nnx.update(cell, from_gated_params(p))
      >>> bool((to_gated_params(cell).w_z == p.w_z).all())
      True
    """
    return common.from_tree(params, "params")


def load_gated_params(module: Any, params: GatedParams) -> Any:
    """Write ``params`` into ``module``'s cell in place, after checking every shape.

    Works on an abstract module too (``nnx.eval_shape(lambda: GatedCell(...))``), so weights
    can be loaded without running the initialisers.

    Args:
      module: a :class:`GatedCell`, or a module holding one as ``cell``.
      params: ``GatedParams`` whose shapes and bias presence match the cell, and whose
        ``w_z`` is ``None`` exactly when the cell has ``recurrent_gate=False``.

    Returns:
      ``module`` (for chaining).

    Raises:
      ValueError: a shape, a bias or ``w_z``'s presence differs from the cell's, naming the
        field (``params.w_z``, ...).

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from gated_jax.cell import init_gated_params
      >>> from gated_jax.nnx import GatedCell, GatedRNN, load_gated_params, to_gated_params
      >>> layer = GatedRNN(GatedCell(3, 4, rngs=nnx.Rngs(0)))
      >>> p = init_gated_params(jax.random.key(5), 3, 4)
      >>> bool((to_gated_params(load_gated_params(layer, p)).w_c == p.w_c).all())
      True
    """
    cell = _cell_of(module, "module")
    tree = common.from_tree(params, "params")
    if (cell.hc is None) != ("hc" not in tree):
        need = (
            "None: the cell has no recurrent gate (recurrent_gate=False, no 'hc' kernel)"
            if cell.hc is None
            else f"an array of shape {tuple(cell.hc.kernel.shape)}: the cell has a recurrent "
            "gate (recurrent_gate=True)"
        )
        raise fail("params.w_z", params.w_z, need)
    targets = {
        "w_c": (cell.ic.kernel, tree["ic"]["kernel"]),
        "w_z": (None if cell.hc is None else cell.hc.kernel, tree.get("hc", {}).get("kernel")),
        "w_x": (cell.ix.kernel, tree["ix"]["kernel"]),
        "b_c": (cell.ic.bias, tree["ic"].get("bias")),
        "b_x": (cell.ix.bias, tree["ix"].get("bias")),
    }
    for name, (var, new) in targets.items():
        want = None if var is None else tuple(var.shape)
        got = None if new is None else tuple(np.shape(new))
        if want != got:
            shown = None if want is None else (want if name == "w_z" else want[::-1])
            need = "None (the cell has no biases)" if want is None else f"of shape {shown}"
            raise fail(f"params.{name}", getattr(params, name), need)
    for var, new in targets.values():
        if var is not None:
            var.set_value(jnp.asarray(new, cell.param_dtype))
    return module


class _Kernel(nnx.Module):
    """The structured ``hc``: one ``kernel`` parameter, ``(m,)`` or ``(H, h, h)`` (no bias)."""

    def __init__(self, kernel: jax.Array):
        self.kernel = nnx.Param(kernel)
        self.bias = None


class GatedCell(nnx.RNNCellBase):
    r"""The gated cell as an NNX ``RNNCellBase``; works in ``nnx.RNN`` and :class:`GatedRNN`.

    .. math::

        c = \sigma(W_c x + W_z z + b_c), \qquad z' = c \odot z + (1 - c) \odot (W_x x + b_x)

    with ``W_c = ic.kernel.T``, ``W_z = hc.kernel.T``, ``W_x = ix.kernel.T``. One step is
    :func:`gated_jax.cell.gated_step`. A positive gate bias (``gate_bias_init``) keeps ``c``
    near 1 and the gradient through time near the identity; see
    :class:`gated_jax.nn.GatedCell`.

    Args:
      in_features: input width ``n`` (a positive int).
      hidden_features: state width ``m`` (a positive int).
      use_bias: add ``b_c`` (``ic.bias``) and ``b_x`` (``ix.bias``); default ``False``.
      recurrent_gate: ``True`` (default) or ``"dense"``: the gate reads the state through
        ``hc`` (``W_z``, ``(m, m)``); ``False``: no ``hc``, ``c = sigma(W_c x + b_c)``, the
        minGRU cell (``GatedParams(w_z=None)``), one exact associative scan under
        ``method="deer"``; ``"diagonal"``: ``hc.kernel`` ``(m,)``; ``"heads"``: ``hc.kernel``
        ``(H, h, h)`` with ``heads=H`` (block-diagonal ``W_z``). The structured gates make
        ``method="deer"`` exact Newton at ``O(T m)`` / ``O(T m h^2)`` per iteration.
      heads: the number of heads ``H`` with ``recurrent_gate="heads"`` (a positive int
        dividing ``hidden_features``); ``None`` otherwise.
      kernel_init, recurrent_kernel_init: initialisers of the ``ic``/``ix`` kernels (LeCun
        normal) and of the ``hc`` kernel (orthogonal; for the structured gates the default is
        uniform on ``[-1, 1]`` (diagonal) or orthogonal per head).
      bias_init: initialiser of the candidate bias ``b_x`` (zeros), and of the gate bias when
        ``gate_bias_init`` is ``None``.
      gate_bias_init: initialiser of the gate bias ``b_c`` (default ``None``: ``bias_init``).
      dtype: computation dtype (default: promoted from inputs, carry and parameters); the new
        carry keeps the carry's dtype (``param_dtype`` by default).
      param_dtype: parameter (and carry) dtype, default float32.
      rngs: ``nnx.Rngs`` for the parameters.

    The carry initialiser is not an option of the cell: pass ``carry_init`` to
    :meth:`initialize_carry` (or to :meth:`GatedRNN.__call__`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from gated_jax.nnx import GatedCell
      >>> rnn = nnx.RNN(GatedCell(3, 4, rngs=nnx.Rngs(0)))
      >>> rnn(jnp.ones((2, 5, 3))).shape
      (2, 5, 4)
      >>> mingru = GatedCell(3, 4, recurrent_gate=False, rngs=nnx.Rngs(0))
      >>> sorted(nnx.to_pure_dict(nnx.state(mingru, nnx.Param)))
      ['ic', 'ix']
      >>> GatedCell(3, 4, recurrent_gate="diagonal", rngs=nnx.Rngs(0)).hc.kernel.shape
      (4,)

    Raises:
      ValueError: for a non-bool flag, a non-positive size, or a ``recurrent_gate`` or
        ``heads`` that names no structure, naming it.

    References:
      Flax's ``nnx.RNN`` / ``nnx.LSTMCell`` conventions (``initialize_carry(input_shape,
      rngs, carry_init)``).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        use_bias: bool = False,
        recurrent_gate: bool | str = True,
        heads: int | None = None,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = common.orthogonal,
        bias_init: Initializer = _ZEROS,
        gate_bias_init: Initializer | None = None,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
        **unknown: Any,
    ):
        _refuse_unknown(unknown)
        self.in_features = size("in_features", in_features)
        self.hidden_features = size("hidden_features", hidden_features)
        self.use_bias = flag("use_bias", use_bias)
        kind, H = recurrent_structure(recurrent_gate, heads, self.hidden_features)
        self.recurrent_gate, self.heads = recurrent_gate, heads
        for name, init in (
            ("kernel_init", kernel_init),
            ("recurrent_kernel_init", recurrent_kernel_init),
            ("bias_init", bias_init),
        ):
            check_initializer(name, init)
        check_initializer("gate_bias_init", gate_bias_init, allow_none=True)
        check_dtype("dtype", dtype, allow_none=True)
        check_dtype("param_dtype", param_dtype)
        if not isinstance(rngs, nnx.Rngs):
            raise fail("rngs", rngs, "an nnx.Rngs (e.g. nnx.Rngs(0))", error=TypeError)
        self.dtype = dtype
        self.param_dtype = param_dtype
        n, m = self.in_features, self.hidden_features
        shape = common.recurrent_kernel_shape(kind, H, m)
        common.check_param_memory("hidden_features", hidden_features, n, m, param_dtype, shape)
        gate_bias_init = bias_init if gate_bias_init is None else gate_bias_init

        def linear(n_in: int, use_bias: bool, kernel: Initializer, bias: Initializer):
            return nnx.Linear(
                n_in,
                m,
                use_bias=use_bias,
                kernel_init=common.half_safe(kernel),
                bias_init=common.half_safe(bias),
                param_dtype=param_dtype,
                rngs=rngs,
            )

        self.ic = linear(n, self.use_bias, kernel_init, gate_bias_init)
        hc: Any = None
        if kind == "dense":
            hc = linear(m, False, recurrent_kernel_init, bias_init)
        elif shape is not None:
            init = common.recurrent_init(recurrent_kernel_init, kind)
            hc = _Kernel(init(rngs.params(), shape, param_dtype))
        self.hc = hc
        self.ix = linear(n, self.use_bias, kernel_init, bias_init)

    def gated_params(self) -> GatedParams:
        """``to_gated_params(self)`` (kept as a method for existing code)."""
        return to_gated_params(self)

    def load_gated_params(self, params: GatedParams) -> None:
        """``load_gated_params(self, params)`` (kept as a method for existing code)."""
        load_gated_params(self, params)

    def _params(self) -> GatedParams:
        def bias(lin):
            return None if lin.bias is None else lin.bias[...]

        return GatedParams(
            w_x=self.ix.kernel[...].T,
            w_c=self.ic.kernel[...].T,
            w_z=None if self.hc is None else common.loop_weights(self.hc.kernel[...]),
            b_c=bias(self.ic),
            b_x=bias(self.ix),
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
        check_step_shapes(carry, inputs, self.hidden_features, self.in_features)
        params, z, x, out_dtype = promote(self._params(), carry, inputs, self.dtype)
        new = gated_step(params, z, x).astype(out_dtype)
        return new, new

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: nnx.Rngs | rnglib.RngStream | jax.Array | None = None,
        carry_init: Initializer | None = None,
    ) -> jax.Array:
        """``carry_init(key, (*batch, hidden_features), param_dtype)``.

        Args:
          input_shape: ``(*batch, in_features)``.
          rngs: ``nnx.Rngs`` (its ``carry`` stream), an ``RngStream`` (what ``nnx.RNN``
            passes), a key, or ``None`` (``jax.random.key(0)``; zeros need no randomness).
          carry_init: the initialiser (default zeros).

        Returns:
          The carry, ``(*batch, hidden_features)``.
        """
        ok = isinstance(input_shape, (tuple, list)) and len(input_shape) >= 1
        ok = ok and all(isinstance(d, (int, np.integer)) and d >= 0 for d in input_shape)
        if not ok:
            raise fail("input_shape", input_shape, "a tuple (*batch, in_features) of ints")
        check_initializer("carry_init", carry_init, allow_none=True)
        init = _ZEROS if carry_init is None else carry_init
        shape = tuple(int(d) for d in input_shape[:-1]) + (self.hidden_features,)
        return init(_carry_key(rngs), shape, self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class GatedRNN(nnx.Module):
    r"""A :class:`GatedCell` over a whole sequence, on :func:`gated_jax.cell.gated_scan`.

    Takes its cell as ``nnx.RNN`` does, ``GatedRNN(GatedCell(n, m, rngs=...))``, with the same
    call options and the cell under ``cell`` (so ``nnx.state(..., nnx.Param)`` has the same
    tree). For every valid step ``t``

    .. math::

        z_t = c_t \odot z_{t-1} + (1 - c_t) \odot (W_x x_t + b_x), \qquad
        c_t = \sigma(W_c x_t + W_z z_{t-1} + b_c).

    Works in ``nnx.Bidirectional``, under ``nnx.jit`` and with ``nnx.Optimizer``. Differences
    from ``nnx.RNN`` with ``seq_lengths`` are those of :class:`gated_jax.nn.GatedRNN`: padded
    steps hold the last valid state, a length-0 sequence returns its initial carry, and several
    batch dims work with ``return_carry``. ``GatedRNN(n, m, rngs=..., **cell_options)`` (the
    first spelling, kept for existing code) builds ``GatedCell(n, m, rngs=...,
    **cell_options)``; with ``recurrent_gate=False`` the cell is minGRU (no ``W_z``), which
    ``method="deer"`` runs as one exact associative scan. The sequence logic is the one
    driver :class:`gated_jax.nn.GatedRNN` runs too.

    Args:
      cell: the :class:`GatedCell` (or, first spelling, ``in_features``).
      hidden_features: first spelling only: the cell's ``hidden_features``.
      time_major, return_carry, reverse, keep_order: strict bools, as in ``nnx.RNN``.
      unroll: steps per loop iteration (a positive int).
      remat: ``True`` (or a block length) recomputes forward states in the backward pass
        (``gated_scan(remat=...)``).
      backward: ``"auto"`` (default), ``"closed_form"`` (reverse mode), ``"autodiff"`` or
        ``"stepwise"`` (also forward mode: ``jvp``, ``jacfwd``), as in
        :func:`gated_jax.cell.gated_scan`.
      method: ``"sequential"`` (default), ``"deer"``, ``"quasi_deer"`` (parallel in time; need
        ``backward="closed_form"``) or ``"auto"``, as in :func:`gated_jax.cell.gated_scan`.
      sow_info: with a parallel method, solve by :func:`gated_jax.cell.gated_deer` and sow its
        :class:`~gated_jax.cell.DeerInfo` (one for the batch) as an ``nnx.Intermediate`` named
        ``deer_info``: ``ys, inter = nnx.capture(layer, nnx.Intermediate)(x)`` (see
        :class:`ParallelRNN`). A strict bool, default ``False``.
      rngs: first spelling: the cell's parameter ``nnx.Rngs``; with a cell it is accepted, as
        ``nnx.RNN`` accepts it, and unused (the carry key comes from the call).
      **cell_options: first spelling only: the other :class:`GatedCell` options.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from gated_jax.nnx import GatedCell, GatedRNN
      >>> layer = GatedRNN(GatedCell(3, 4, rngs=nnx.Rngs(0)))
      >>> carry, ys = layer(jnp.ones((2, 5, 3)), return_carry=True)
      >>> ys.shape, carry.shape
      ((2, 5, 4), (2, 4))

    Raises:
      TypeError: ``cell`` is another module, cell options are given beside a cell, or the
        first spelling lacks ``hidden_features`` or ``rngs``.
      ValueError: an invalid sequence option, naming it; at call time, inputs,
        ``initial_carry`` or ``seq_lengths`` of the wrong shape.

    References:
      ``flax.nnx.RNN`` (https://flax.readthedocs.io/en/latest/api_reference/flax.nnx/nn/
      recurrent.html), whose call options and state layout this layer follows. L. Feng et
      al., "Were RNNs All We Needed?" (2024): minGRU. Y. H. Lim et al., "Parallelizing
      non-linear sequential models over the sequence length" (ICLR 2024): DEER.
    """

    def __init__(
        self,
        cell: GatedCell | int,
        hidden_features: int | None = None,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        unroll: int = 1,
        remat: bool | int = False,
        backward: str = "auto",
        method: str = "sequential",
        sow_info: bool = False,
        rngs: nnx.Rngs | bool | None = None,
        **cell_options: Any,
    ):
        self.cell = _cell_or_first_spelling(cell, hidden_features, rngs, cell_options)
        self.sow_info: bool = flag("sow_info", sow_info)
        options = common.sequence_options(
            time_major=time_major,
            return_carry=return_carry,
            reverse=reverse,
            keep_order=keep_order,
            unroll=unroll,
            remat=remat,
            backward=backward,
            method=method,
        )
        self.time_major: bool = options["time_major"]
        self.return_carry: bool = options["return_carry"]
        self.reverse: bool = options["reverse"]
        self.keep_order: bool = options["keep_order"]
        self.unroll: int = options["unroll"]
        self.remat: bool | int = options["remat"]
        self.backward: str = options["backward"]
        self.method: str = options["method"]

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: jax.Array | None = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs: nnx.Rngs | rnglib.RngStream | jax.Array | None = None,
        carry_init: Initializer | None = None,
    ):
        """Run over ``inputs``.

        Args:
          inputs: ``(*batch, T, n)`` (``(T, *batch, n)`` if ``time_major``); a nested list or
            NumPy array of floats is converted.
          initial_carry: ``(*batch, m)``, converted as ``inputs`` is; default
            ``cell.initialize_carry(..., rngs, carry_init)``.
          seq_lengths: ``(*batch,)`` ints in ``[0, T]``.
          return_carry, time_major, reverse, keep_order: override the attributes (``None``:
            use the attribute).
          rngs: feeds a random ``carry_init``.
          carry_init: the carry initialiser (default zeros).

        Returns:
          The outputs ``(*batch, T, m)``, or ``(carry, outputs)`` with ``return_carry``.
        """
        cell = self.cell
        sow = lambda info: self.sow(nnx.Intermediate, "deer_info", info)
        return common.run_sequence(
            self,
            inputs,
            cell_params=lambda n: cell._params(),
            new_carry=lambda input_shape: cell.initialize_carry(input_shape, rngs, carry_init),
            in_features=cell.in_features,
            dtype=cell.dtype,
            initial_carry=initial_carry,
            seq_lengths=seq_lengths,
            overrides=dict(
                return_carry=return_carry,
                time_major=time_major,
                reverse=reverse,
                keep_order=keep_order,
            ),
            on_info=sow if self.sow_info else None,
        )


def _refuse_unknown(unknown: dict[str, Any]) -> None:
    """``GatedCell``'s unexpected keywords (``carry_init`` belongs to the call)."""
    if "carry_init" in unknown:
        raise fail(
            "carry_init",
            unknown["carry_init"],
            "passed to GatedCell.initialize_carry(..., carry_init=...) or "
            "GatedRNN.__call__(..., carry_init=...), not stored on the NNX module",
            error=TypeError,
        )
    if unknown:
        raise TypeError(f"GatedCell got unexpected keyword arguments {sorted(unknown)}")


def _cell_or_first_spelling(
    cell: Any, hidden_features: int | None, rngs: Any, cell_options: dict[str, Any]
) -> GatedCell:
    """The layer's cell: ``cell`` itself, or ``GatedCell(cell, hidden_features, rngs=rngs,
    **cell_options)`` for the first spelling ``GatedRNN(in_features, hidden_features, ...)``.
    """
    if isinstance(cell, GatedCell):
        if hidden_features is not None or cell_options:
            given = sorted(cell_options) + ([] if hidden_features is None else ["hidden_features"])
            raise common.cell_options_beside_cell(given)
        return cell
    if isinstance(cell, nnx.Module):
        raise fail("cell", brief(cell), "a gated_jax.nnx.GatedCell", error=TypeError)
    if hidden_features is None:
        raise fail(
            "hidden_features",
            None,
            "given with `in_features` (=GatedRNN(in_features, hidden_features, "
            "rngs=...)), or pass GatedRNN(GatedCell(...))",
            error=TypeError,
        )
    if not isinstance(rngs, nnx.Rngs):
        raise fail("rngs", rngs, "an nnx.Rngs for the cell's parameters", error=TypeError)
    return GatedCell(cell, hidden_features, rngs=rngs, **cell_options)


class ParallelRNN(nnx.Module):
    r"""Any NNX RNN cell over a sequence, in parallel over time (DEER) or sequentially.

    The NNX twin of :class:`gated_jax.nn.ParallelRNN` (same driver, same math): a drop-in for
    ``nnx.RNN(cell)`` with the same state (the cell under ``cell``, the carry's RNG stream
    under ``rngs``), call options and outputs, for any ``nnx.RNNCellBase`` with one feature
    axis (``GRUCell``, ``LSTMCell``, ``OptimizedLSTMCell``, ``SimpleCell``, :class:`GatedCell`,
    your own). ``method="deer"`` solves

    .. math::

        \text{carry}_t = \text{cell}(\text{carry}_{t-1}, x_t)[0] \quad \text{for all } t

    by :func:`gated_jax.deer_scan` (autodiff Jacobians of the cell, residual-judged Newton,
    implicit-differentiation gradients), then the outputs in one parallel evaluation. Eagerly
    an unconverged solve raises :class:`~gated_jax.cell.DeerNotConverged`; under ``nnx.jit``
    the sequential scan is run instead (for the whole batch, when any sequence did not
    converge). With ``sow_info=True`` each parallel call sows the solver's
    :class:`~gated_jax.cell.DeerInfo` (one per sequence: ``iterations``, ``residuals``,
    ``converged``, ``sequential``) as an ``nnx.Intermediate`` named ``deer_info``, the NNX
    idiom for intermediates (as ``nnx.MultiHeadAttention(sow_weights=True)``): read it with
    ``ys, inter = nnx.capture(layer, nnx.Intermediate)(x)``, then ``inter["deer_info"][0]``
    (``nnx.capture`` works inside ``nnx.jit``; outside a capture Flax stores it on the module).

    Args:
      cell: an ``nnx.RNNCellBase`` (one feature axis).
      method: ``"deer"`` (default), ``"quasi_deer"``, ``"sequential"`` or ``"auto"``
        (``"sequential"`` for now); see :class:`gated_jax.nn.ParallelRNN`.
      tol, max_iters, window: the solver's (``None``: :func:`gated_jax.deer_scan`'s defaults;
        ``window=T`` keeps every update wide).
      time_major, return_carry, reverse, keep_order: as ``nnx.RNN``.
      sow_info: sow the solver's ``DeerInfo`` when a parallel method runs (a strict bool).
      rngs: as ``nnx.RNN``'s (the stream ``initialize_carry`` draws from): ``True`` (default),
        ``False`` or an ``nnx.Rngs``.

    Raises:
      ValueError: an invalid option, naming it; inputs or ``seq_lengths`` of the wrong shape.
      gated_jax.cell.DeerNotConverged: eagerly, when Newton did not converge.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from gated_jax.nnx import ParallelRNN
      >>> cell = nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))
      >>> x = jax.random.normal(jax.random.key(1), (2, 16, 3))
      >>> ys = ParallelRNN(cell)(x)
      >>> bool(jnp.max(jnp.abs(ys - nnx.RNN(cell)(x))) < 1e-4)
      True

    References:
      ``flax.nnx.RNN``; Y. H. Lim et al., "Parallelizing non-linear sequential models over
      the sequence length" (DEER), ICLR 2024.
    """

    def __init__(
        self,
        cell: nnx.RNNCellBase,
        *,
        method: str = "deer",
        tol: float | None = None,
        max_iters: int | None = None,
        window: int | None = None,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        sow_info: bool = False,
        rngs: nnx.Rngs | bool = True,
    ):
        if not isinstance(cell, nnx.RNNCellBase):
            raise fail("cell", cell, "a flax.nnx.RNNCellBase (GRUCell, LSTMCell, ...)")
        options = common.parallel_options(
            method=method,
            tol=tol,
            max_iters=max_iters,
            window=window,
            time_major=time_major,
            return_carry=return_carry,
            reverse=reverse,
            keep_order=keep_order,
        )
        self.cell = cell
        self.method: str = options["method"]
        self.tol: float | None = options["tol"]
        self.max_iters: int | None = options["max_iters"]
        self.window: int | None = options["window"]
        self.time_major: bool = options["time_major"]
        self.return_carry: bool = options["return_carry"]
        self.reverse: bool = options["reverse"]
        self.keep_order: bool = options["keep_order"]
        self.sow_info: bool = flag("sow_info", sow_info)
        self.rngs: rnglib.RngStream | None
        if rngs is True:
            self.rngs = rnglib.RngStream(0, tag="carry")
        elif isinstance(rngs, nnx.Rngs):
            self.rngs = rngs.carry.fork()
        elif rngs is False:
            self.rngs = nnx.data(None)
        else:
            raise fail("rngs", rngs, "True, False or an nnx.Rngs")

    def __call__(
        self,
        inputs: Any,
        *,
        initial_carry: Any = None,
        seq_lengths: Any = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs: nnx.Rngs | rnglib.RngStream | None = None,
    ):
        """Apply the cell over ``inputs`` (``nnx.RNN.__call__``'s arguments and results)."""
        overrides = dict(
            return_carry=return_carry, time_major=time_major, reverse=reverse, keep_order=keep_order
        )
        flags, inputs, t_axis, shape = common.prepare_call(self, inputs, overrides)
        if initial_carry is None:
            rngs = self.rngs if rngs is None else rngs
            if isinstance(rngs, nnx.Rngs):
                rngs = rngs.carry.fork()
            initial_carry = self.cell.initialize_carry(shape, rngs)
        graphdef, state = nnx.split(self.cell)
        carry, outputs, info = common.run_cell(
            lambda c, x: nnx.merge(graphdef, state)(c, x),
            inputs,
            initial_carry,
            method=self.method,
            **common.solver_options(self),
            seq_lengths=seq_lengths,
            time_major=flags["time_major"],
            reverse=flags["reverse"],
            keep_order=flags["keep_order"],
        )
        if info is not None and self.sow_info:
            self.sow(nnx.Intermediate, "deer_info", info)
        return (carry, outputs) if flags["return_carry"] else outputs
