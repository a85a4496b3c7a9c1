r"""Flax NNX modules for the gated cell of seed 1.2: a step cell and a fast sequence layer.

The same cell as :mod:`gated_jax.nn`, with NNX's conventions (``in_features`` and
``hidden_features`` given up front, parameters created eagerly from ``rngs``):

.. math::

    c = \sigma(x K_{ic} + b_{ic} + z K_{hc}), \qquad
    z' = c \odot z + (1 - c) \odot (x K_{ix} + b_{ix}).

State (``nnx.state(cell, nnx.Param)``): three ``nnx.Linear`` submodules with the linen cell's
names and leaves, so weights move between the APIs leaf by leaf (Flax kernels are
``(in, out)``; :class:`gated_jax.cell.GatedParams` is ``(out, in)``):

=============  ===========  ============================  =============================
submodule      leaf         shape                         ``GatedParams`` field
=============  ===========  ============================  =============================
``ic``         ``kernel``   ``(n, m)``                    ``w_c = ic.kernel.T``
``ic``         ``bias``     ``(m,)`` (``use_bias`` only)  ``b_c = ic.bias``
``hc``         ``kernel``   ``(m, m)``                    ``w_z = hc.kernel.T``
``ix``         ``kernel``   ``(n, m)``                    ``w_x = ix.kernel.T``
``ix``         ``bias``     ``(m,)`` (``use_bias`` only)  ``b_x = ix.bias``
=============  ===========  ============================  =============================

:class:`GatedRNN` keeps its cell under ``cell``, as ``nnx.RNN(GatedCell(...))`` does, so
``nnx.update(fast, nnx.state(slow, nnx.Param))`` moves weights between the two.

Initialisers (defaults): ``kernel_init`` LeCun normal (variance ``1/n``),
``recurrent_kernel_init`` orthogonal, ``bias_init`` zeros, ``carry_init`` zeros: the same as
:class:`gated_jax.nn.GatedCell` and :func:`gated_jax.cell.init_gated_params`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import rnglib
from flax.nnx.nn import initializers
from flax.nnx.nn.linear import default_kernel_init
from flax.typing import Dtype, Initializer

from gated_jax._rnn_common import apply_sequence, check_backward, check_step_shapes, promote
from gated_jax._validate import positive_int
from gated_jax.cell import GatedParams, gated_step

__all__ = ["GatedCell", "GatedRNN"]

_ORTHOGONAL = initializers.orthogonal()
_ZEROS = initializers.zeros_init()


def _carry_key(rngs) -> jax.Array:
    """A key from ``Rngs`` (its ``carry`` stream), an ``RngStream``, a key, or ``None``.

    ``None`` gives ``jax.random.key(0)``, as linen's ``nn.RNN`` does without ``init_key``; the
    default zeros ``carry_init`` ignores the key.
    """
    if rngs is None:
        return jax.random.key(0)
    if isinstance(rngs, nnx.Rngs):
        return rngs.carry()
    if isinstance(rngs, rnglib.RngStream):
        return rngs()
    return rngs


class GatedCell(nnx.RNNCellBase):
    r"""The gated cell of seed 1.2 as an NNX ``RNNCellBase``; works in ``nnx.RNN``.

    .. math::

        c = \sigma(W_c x + W_z z + b_c), \qquad z' = c \odot z + (1 - c) \odot (W_x x + b_x)

    with ``W_c = ic.kernel.T``, ``W_z = hc.kernel.T``, ``W_x = ix.kernel.T``. One step is
    :func:`gated_jax.cell.gated_step`.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from gated_jax.nnx import GatedCell
        >>> rnn = nnx.RNN(GatedCell(3, 4, rngs=nnx.Rngs(0)))
        >>> rnn(jnp.ones((2, 5, 3))).shape
        (2, 5, 4)

    Args:
      in_features: input width ``n``.
      hidden_features: state width ``m``.
      use_bias: add ``b_c`` (``ic.bias``) and ``b_x`` (``ix.bias``); default ``False``, the
        seed's cell.
      kernel_init, recurrent_kernel_init, bias_init: initialisers of ``ic``/``ix`` kernels
        (LeCun normal), ``hc`` kernel (orthogonal) and the biases (zeros).
      carry_init: default initialiser of :meth:`initialize_carry` (zeros).
      dtype: computation dtype (default: promoted from inputs, carry and parameters); the new
        carry has ``result_type(dtype, carry.dtype)``.
      param_dtype: parameter (and carry) dtype, default float32.
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        use_bias: bool = False,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = _ORTHOGONAL,
        bias_init: Initializer = _ZEROS,
        carry_init: Initializer = _ZEROS,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        positive_int("in_features", in_features)
        positive_int("hidden_features", hidden_features)
        self.in_features = int(in_features)
        self.hidden_features = int(hidden_features)
        self.use_bias = bool(use_bias)
        self.carry_init = carry_init
        self.dtype = dtype
        self.param_dtype = param_dtype
        linear = dict(param_dtype=param_dtype, bias_init=bias_init, rngs=rngs)
        self.ic = nnx.Linear(
            in_features, hidden_features, use_bias=use_bias, kernel_init=kernel_init, **linear
        )
        self.hc = nnx.Linear(
            hidden_features,
            hidden_features,
            use_bias=False,
            kernel_init=recurrent_kernel_init,
            **linear,
        )
        self.ix = nnx.Linear(
            in_features, hidden_features, use_bias=use_bias, kernel_init=kernel_init, **linear
        )

    def gated_params(self) -> GatedParams:
        """This cell's parameters as ``GatedParams`` (``(out, in)`` matrices)."""

        def bias(lin):
            return None if lin.bias is None else lin.bias[...]

        return GatedParams(
            w_x=self.ix.kernel[...].T,
            w_c=self.ic.kernel[...].T,
            w_z=self.hc.kernel[...].T,
            b_c=bias(self.ic),
            b_x=bias(self.ix),
        )

    def load_gated_params(self, params: GatedParams) -> None:
        """Set the weights from ``GatedParams`` (shapes and bias presence must match).

        Works on an abstract module too (``nnx.eval_shape(lambda: GatedCell(...))``), so weights
        can be loaded without running the initialisers.
        """
        targets = {
            "w_c": (self.ic.kernel, True),
            "w_z": (self.hc.kernel, True),
            "w_x": (self.ix.kernel, True),
            "b_c": (self.ic.bias, False),
            "b_x": (self.ix.bias, False),
        }
        for name, (var, transpose) in targets.items():
            new = getattr(params, name)
            want = None if var is None else tuple(var.shape)[:: -1 if transpose else 1]
            got = None if new is None else tuple(np.shape(new))
            if want != got:
                raise ValueError(f"`params.{name}` has shape {got}; this cell needs {want}")
        for name, (var, transpose) in targets.items():
            if var is not None:
                new = jnp.asarray(getattr(params, name), self.param_dtype)
                var.set_value(new.T if transpose else new)

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:  # type: ignore[override]
        """One step: ``carry`` ``(*batch, m)``, ``inputs`` ``(*batch, n)`` -> ``(z', z')``."""
        check_step_shapes(carry, inputs, self.hidden_features)
        if np.shape(inputs)[-1] != self.in_features:
            raise ValueError(
                f"`inputs` must have last dimension in_features = {self.in_features}; "
                f"got shape {np.shape(inputs)}"
            )
        params, z, x, out_dtype = promote(self.gated_params(), carry, inputs, self.dtype)
        new = gated_step(params, z, x).astype(out_dtype)
        return new, new

    def initialize_carry(  # type: ignore[override]
        self,
        input_shape: tuple[int, ...],
        rngs: nnx.Rngs | rnglib.RngStream | jax.Array | None = None,
        carry_init: Initializer | None = None,
    ) -> jax.Array:
        """``carry_init(key, (*batch, hidden_features), param_dtype)``.

        ``input_shape`` is ``(*batch, in_features)``. ``rngs`` may be ``nnx.Rngs`` (its
        ``carry`` stream), an ``RngStream`` (what ``nnx.RNN`` passes), a key, or ``None``
        (``jax.random.key(0)``; the default zeros initialiser needs no randomness).
        """
        input_shape = tuple(input_shape)
        if len(input_shape) < 1:
            raise ValueError(
                f"`input_shape` (={input_shape}) must be (*batch, in_features), rank >= 1"
            )
        init = self.carry_init if carry_init is None else carry_init
        shape = input_shape[:-1] + (self.hidden_features,)
        return init(_carry_key(rngs), shape, self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class GatedRNN(nnx.Module):
    r"""The gated cell over a whole sequence, on :func:`gated_jax.cell.gated_scan`'s fast path.

    A drop-in for ``nnx.RNN(GatedCell(in_features, hidden_features, ...))``: the same call
    options, and the cell under ``cell`` (so ``nnx.state(..., nnx.Param)`` has the same tree).
    Works in ``nnx.Bidirectional``, under ``nnx.jit`` and with ``nnx.Optimizer``. Differences
    from ``nnx.RNN`` with ``seq_lengths`` are those of :class:`gated_jax.nn.GatedRNN`: padded
    steps hold the last valid state, a length-0 sequence returns its initial carry, and several
    batch dims work with ``return_carry``.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from gated_jax.nnx import GatedRNN
        >>> layer = GatedRNN(3, 4, rngs=nnx.Rngs(0))
        >>> carry, ys = layer(jnp.ones((2, 5, 3)), return_carry=True)
        >>> ys.shape, carry.shape
        ((2, 5, 4), (2, 4))

    Args:
      in_features, hidden_features, use_bias, kernel_init, recurrent_kernel_init, bias_init,
        carry_init, dtype, param_dtype: as in :class:`GatedCell`.
      time_major, return_carry, reverse, keep_order, unroll: as in ``nnx.RNN``.
      remat: recompute forward states in the backward pass (``gated_scan(remat=...)``).
      backward: ``"closed_form"`` (default, fast; reverse mode) or ``"autodiff"`` (also forward
        mode: ``jvp``, ``jacfwd``), as in :func:`gated_jax.cell.gated_scan`.
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        use_bias: bool = False,
        kernel_init: Initializer = default_kernel_init,
        recurrent_kernel_init: Initializer = _ORTHOGONAL,
        bias_init: Initializer = _ZEROS,
        carry_init: Initializer = _ZEROS,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        unroll: int = 1,
        remat: bool | int = False,
        backward: str = "closed_form",
        rngs: nnx.Rngs,
    ):
        positive_int("unroll", unroll)
        check_backward(backward)
        self.cell = GatedCell(
            in_features,
            hidden_features,
            use_bias=use_bias,
            kernel_init=kernel_init,
            recurrent_kernel_init=recurrent_kernel_init,
            bias_init=bias_init,
            carry_init=carry_init,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.time_major = bool(time_major)
        self.return_carry = bool(return_carry)
        self.reverse = bool(reverse)
        self.keep_order = bool(keep_order)
        self.unroll = int(unroll)
        self.remat = remat
        self.backward = backward

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
    ):
        """Run over ``inputs`` ``(*batch, T, n)`` (``(T, *batch, n)`` if ``time_major``).

        Returns the outputs ``(*batch, T, m)``, or ``(carry, outputs)`` with
        ``return_carry``. ``rngs`` only feeds a random ``carry_init``.
        """
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        sx = tuple(np.shape(inputs))
        if len(sx) < 2:
            raise ValueError(
                f"`inputs` must have shape (*batch, time, features) with rank >= 2; got shape {sx}"
            )
        if sx[-1] != self.cell.in_features:
            raise ValueError(
                f"`inputs` must have last dimension in_features = {self.cell.in_features}; "
                f"got shape {sx}"
            )
        batch = sx[1:-1] if time_major else sx[:-2]
        if initial_carry is None:
            initial_carry = self.cell.initialize_carry(batch + sx[-1:], rngs)
        carry, outputs = apply_sequence(
            self.cell.gated_params(),
            inputs,
            initial_carry,
            dtype=self.cell.dtype,
            seq_lengths=seq_lengths,
            time_major=time_major,
            reverse=reverse,
            keep_order=keep_order,
            unroll=self.unroll,
            remat=self.remat,
            backward=self.backward,
        )
        return (carry, outputs) if return_carry else outputs
