r"""Flax linen modules for the gated cell of seed 1.2: a step cell and a fast sequence layer.

The cell computes, for an input ``x`` (``(..., n)``) and the previous state ``z`` (``(..., m)``,
``m = features``):

.. math::

    c = \sigma(x K_{ic} + b_{ic} + z K_{hc}), \qquad
    z' = c \odot z + (1 - c) \odot (x K_{ix} + b_{ix}).

Parameter tree (the same for :class:`GatedCell`, for ``nn.RNN(GatedCell(...))`` under
``'cell'`` and for :class:`GatedRNN` under ``'cell'``), with Flax's ``(in, out)`` kernels and
its map to :class:`gated_jax.cell.GatedParams` (the seed's ``(out, in)`` matrices):

=============  ===========  ============================  =============================
submodule      leaf         shape                         ``GatedParams`` field
=============  ===========  ============================  =============================
``ic``         ``kernel``   ``(n, m)``                    ``w_c = ic.kernel.T``
``ic``         ``bias``     ``(m,)`` (``use_bias`` only)  ``b_c = ic.bias``
``hc``         ``kernel``   ``(m, m)``                    ``w_z = hc.kernel.T``
``ix``         ``kernel``   ``(n, m)``                    ``w_x = ix.kernel.T``
``ix``         ``bias``     ``(m,)`` (``use_bias`` only)  ``b_x = ix.bias``
=============  ===========  ============================  =============================

``ic``/``ix`` are "input to gate/candidate", ``hc`` "hidden to gate", as in Flax's ``MGUCell``
(``if``, ``hf``, ``in``). The recurrent path has no bias: it is summed with ``ic``'s. Each
submodule's leaves are exactly those of an ``nn.Dense`` of the same width, so a Dense-based
port of the cell reads them unchanged. :func:`to_gated_params` and :func:`from_gated_params`
convert between the tree and ``GatedParams``.

Gradients follow the same map: ``jax.grad`` gives ``ic.kernel`` a gradient of shape ``(n, m)``,
the transpose of ``dl/dW_c`` (``(m, n)``, the shape of ``W_c``). The seed's ``dl/dW_x`` "in
``R^{n x m}``" (1.2(c)) is the shape of this Flax kernel's gradient, not of ``W_x``'s.

Initialisers (defaults): ``kernel_init`` (``ic``, ``ix``) is LeCun normal, variance ``1/n``;
``recurrent_kernel_init`` (``hc``) is orthogonal, so ``||W_z||_2 = 1``; ``bias_init`` zeros;
``carry_init`` zeros. These match :func:`gated_jax.cell.init_gated_params` and Flax's
``GRUCell``. ``use_bias=False`` (the default) is the seed's cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import initializers
from flax.linen.linear import default_kernel_init
from flax.typing import Dtype, Initializer, PRNGKey

from gated_jax._rnn_common import apply_sequence, check_backward, check_step_shapes, promote
from gated_jax._validate import positive_int
from gated_jax.cell import GatedParams, gated_step

__all__ = ["GatedCell", "GatedRNN", "to_gated_params", "from_gated_params"]


# --------------------------------------------------------------------------------------------
# the parameter map


def _unwrap_cell_tree(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept ``variables``, ``variables['params']``, an RNN's params or a cell's params."""
    for key in ("params", "cell"):
        if isinstance(tree, Mapping) and key in tree and "ic" not in tree:
            tree = tree[key]
    if not isinstance(tree, Mapping) or not {"ic", "hc", "ix"} <= set(tree):
        keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise ValueError(
            f"expected a GatedCell parameter tree with submodules 'ic', 'hc', 'ix' "
            f"(optionally under 'params' and/or 'cell'); got keys {keys}"
        )
    return tree


def to_gated_params(tree: Mapping[str, Any]) -> GatedParams:
    """``GatedParams`` (``(out, in)`` matrices) from a linen cell's parameter tree.

    ``w_c = ic.kernel.T``, ``w_z = hc.kernel.T``, ``w_x = ix.kernel.T``, ``b_c = ic.bias``,
    ``b_x = ix.bias`` (``None`` when the tree has no bias). ``tree`` may be the cell's params,
    ``params['cell']``'s parent (an ``nn.RNN``/``GatedRNN``), or the whole ``variables``.
    """
    t = _unwrap_cell_tree(tree)
    return GatedParams(
        w_x=jnp.asarray(t["ix"]["kernel"]).T,
        w_c=jnp.asarray(t["ic"]["kernel"]).T,
        w_z=jnp.asarray(t["hc"]["kernel"]).T,
        b_c=t["ic"].get("bias"),
        b_x=t["ix"].get("bias"),
    )


def from_gated_params(params: GatedParams) -> dict[str, Any]:
    """The linen cell parameter tree (``{'ic': ..., 'hc': ..., 'ix': ...}``) of ``params``.

    The inverse of :func:`to_gated_params`; both biases must be given or both ``None``
    (``GatedCell.use_bias`` covers the two together). Wrap as ``{'params': tree}`` for a
    cell, ``{'params': {'cell': tree}}`` for ``nn.RNN(GatedCell)`` or :class:`GatedRNN`.
    """
    if (params.b_c is None) != (params.b_x is None):
        raise ValueError(
            "`params` must have both biases or neither (GatedCell.use_bias covers both); got "
            f"b_c={'None' if params.b_c is None else 'array'}, "
            f"b_x={'None' if params.b_x is None else 'array'}"
        )
    ic: dict[str, Any] = {"kernel": jnp.asarray(params.w_c).T}
    ix: dict[str, Any] = {"kernel": jnp.asarray(params.w_x).T}
    if params.b_c is not None:
        ic["bias"] = jnp.asarray(params.b_c)
        ix["bias"] = jnp.asarray(params.b_x)
    return {"ic": ic, "hc": {"kernel": jnp.asarray(params.w_z).T}, "ix": ix}


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
        k = self.param("kernel", self.kernel_init, (in_features, self.features), self.param_dtype)
        if not self.use_bias:
            return k, None
        return k, self.param("bias", self.bias_init, (self.features,), self.param_dtype)


class GatedCell(nn.RNNCellBase):
    r"""The gated cell of seed 1.2 as a linen ``RNNCellBase``.

    .. math::

        c = \sigma(W_c x + W_z z + b_c), \qquad z' = c \odot z + (1 - c) \odot (W_x x + b_x)

    with ``W_c = ic.kernel.T``, ``W_z = hc.kernel.T``, ``W_x = ix.kernel.T`` (the table in the
    module docstring). ``c`` has the state's dimension ``m = features`` (seed 1.2(b)); the
    output is the new state. One step is :func:`gated_jax.cell.gated_step`.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> from gated_jax.nn import GatedCell
        >>> x = jnp.ones((2, 5, 3))                      # (batch, time, n)
        >>> rnn = nn.RNN(GatedCell(features=4))
        >>> variables = rnn.init(jax.random.key(0), x)
        >>> rnn.apply(variables, x).shape
        (2, 5, 4)

    Attributes:
      features: state width ``m``.
      use_bias: add the biases ``b_c`` (``ic.bias``) and ``b_x`` (``ix.bias``); the default
        ``False`` is the seed's cell.
      kernel_init: initialiser of the input kernels ``ic``, ``ix`` (default LeCun normal).
      recurrent_kernel_init: initialiser of ``hc`` (default orthogonal).
      bias_init: initialiser of both biases (default zeros).
      carry_init: initialiser of the carry in :meth:`initialize_carry` (default zeros).
      dtype: computation dtype (default: promoted from inputs, carry and parameters). The new
        carry has ``result_type(dtype, carry.dtype)`` so that a float32 carry stays float32.
      param_dtype: parameter (and carry) dtype, default float32.
    """

    features: int
    use_bias: bool = False
    kernel_init: Initializer = default_kernel_init
    recurrent_kernel_init: Initializer = initializers.orthogonal()
    bias_init: Initializer = initializers.zeros_init()
    carry_init: Initializer = initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        positive_int("features", self.features)
        super().__post_init__()

    def setup(self) -> None:
        dense = dict(features=self.features, param_dtype=self.param_dtype)
        self.ic = _DenseParams(
            use_bias=self.use_bias, kernel_init=self.kernel_init, bias_init=self.bias_init, **dense
        )
        self.hc = _DenseParams(
            use_bias=False,
            kernel_init=self.recurrent_kernel_init,
            bias_init=self.bias_init,
            **dense,
        )
        self.ix = _DenseParams(
            use_bias=self.use_bias, kernel_init=self.kernel_init, bias_init=self.bias_init, **dense
        )

    def gated_params(self, in_features: int) -> GatedParams:
        """This cell's parameters as ``GatedParams`` (created on first use, ``(out, in)``)."""
        positive_int("in_features", in_features)
        k_c, b_c = self.ic(in_features)
        (k_z, _) = self.hc(self.features)
        k_x, b_x = self.ix(in_features)
        return GatedParams(w_x=k_x.T, w_c=k_c.T, w_z=k_z.T, b_c=b_c, b_x=b_x)

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step: ``carry`` ``(*batch, m)``, ``inputs`` ``(*batch, n)`` -> ``(z', z')``."""
        check_step_shapes(carry, inputs, self.features)
        params = self.gated_params(int(np.shape(inputs)[-1]))
        params, z, x, out_dtype = promote(params, carry, inputs, self.dtype)
        new = gated_step(params, z, x).astype(out_dtype)
        return new, new

    @nn.nowrap
    def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> jax.Array:
        """``carry_init(rng, (*batch, features), param_dtype)``, ``input_shape = (*batch, n)``."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 1:
            raise ValueError(
                f"`input_shape` (={input_shape}) must be (*batch, in_features), rank >= 1"
            )
        return self.carry_init(rng, input_shape[:-1] + (self.features,), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class GatedRNN(nn.Module):
    r"""The gated cell over a whole sequence, on :func:`gated_jax.cell.gated_scan`'s fast path.

    A drop-in for ``nn.RNN(GatedCell(features, ...))``: the same call options and the same
    parameter tree (the cell's parameters under ``'cell'``), so variables initialised or trained
    with one apply unchanged to the other. The input projections are hoisted out of the time
    loop and the backward pass is the closed-form BPTT of :mod:`gated_jax.cell`.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> from flax import linen as nn
        >>> from gated_jax.nn import GatedCell, GatedRNN
        >>> x = jnp.ones((2, 5, 3))
        >>> variables = nn.RNN(GatedCell(4)).init(jax.random.key(0), x)
        >>> GatedRNN(4).apply(variables, x).shape      # the same weights, the fast path
        (2, 5, 4)

    Parameters are created from module paths, so ``GatedRNN(...).init(key, x)`` and
    ``nn.RNN(GatedCell(...)).init(key, x)`` give the same weights. Inside another module's
    ``@nn.compact`` method build the cell as ``nn.RNN(GatedCell(..., parent=None))``: otherwise
    Flax binds the cell to the enclosing module, and its parameters sit beside the ``RNN``
    instead of under ``<rnn>/cell`` (a Flax rule for modules passed as attributes).

    Differences from ``nn.RNN`` (deliberate; equal everywhere else):

    * with ``seq_lengths``, outputs at padded steps hold the sequence's last valid state
      (``nn.RNN`` keeps running the cell over the padding and returns those values); outputs
      at valid steps and the returned carry are the same;
    * a sequence of length 0 returns its initial carry (``nn.RNN`` indexes step ``-1`` and
      returns the carry after the whole padded run);
    * ``seq_lengths`` with ``return_carry`` works with several batch dims (``nn.RNN``'s carry
      selection assumes one).

    Attributes:
      features, use_bias, kernel_init, recurrent_kernel_init, bias_init, carry_init, dtype,
        param_dtype: as in :class:`GatedCell`.
      time_major, return_carry, reverse, keep_order, unroll: as in ``nn.RNN``.
      remat: recompute the forward states in the backward pass instead of storing them
        (``gated_scan(remat=True)``): less memory on long sequences.
      backward: ``"closed_form"`` (default, fast; reverse mode: ``grad``, ``vjp``) or
        ``"autodiff"`` (JAX differentiates the scan; also forward mode: ``jvp``, ``jacfwd``),
        as in :func:`gated_jax.cell.gated_scan`.
    """

    features: int
    use_bias: bool = False
    kernel_init: Initializer = default_kernel_init
    recurrent_kernel_init: Initializer = initializers.orthogonal()
    bias_init: Initializer = initializers.zeros_init()
    carry_init: Initializer = initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = False
    unroll: int = 1
    remat: bool = False
    backward: str = "closed_form"

    def __post_init__(self) -> None:
        positive_int("features", self.features)
        positive_int("unroll", self.unroll)
        check_backward(self.backward)
        super().__post_init__()

    def setup(self) -> None:
        self.cell = GatedCell(
            features=self.features,
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            recurrent_kernel_init=self.recurrent_kernel_init,
            bias_init=self.bias_init,
            carry_init=self.carry_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

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
        """Run over ``inputs`` ``(*batch, T, n)`` (``(T, *batch, n)`` if ``time_major``).

        Returns the outputs ``(*batch, T, m)`` (time axis where the input had it), or
        ``(carry, outputs)`` with ``return_carry``. Arguments as in ``nn.RNN.__call__``.
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
        batch = sx[1:-1] if time_major else sx[:-2]
        if initial_carry is None:
            key = jax.random.key(0) if init_key is None else init_key
            initial_carry = self.cell.initialize_carry(key, batch + sx[-1:])
        params = self.cell.gated_params(sx[-1])
        carry, outputs = apply_sequence(
            params,
            inputs,
            initial_carry,
            dtype=self.dtype,
            seq_lengths=seq_lengths,
            time_major=time_major,
            reverse=reverse,
            keep_order=keep_order,
            unroll=self.unroll,
            remat=self.remat,
            backward=self.backward,
        )
        return (carry, outputs) if return_carry else outputs
