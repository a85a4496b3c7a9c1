r"""The resolved convolution configuration and the one home of every padding form.

Every function of :mod:`gated_jax.shapes`, :mod:`gated_jax.conv` and :mod:`gated_jax.ports`
normalises its arguments here, once: the conv-argument validators (ints, per-dim sequences,
shapes), the dimension numbers, and every padding form the package reads:

* lax's strings ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'`` and explicit ``(lo, hi)`` pairs
  (``lax.conv_general_dilated``), and ``lax.conv_transpose``'s forward-padding reading;
* Flax's ``'CIRCULAR'``, ``'REFLECT'``, ``'CAUSAL'``, ints and per-dim ints or pairs
  (``flax.linen.Conv``, ``flax.nnx.Conv``);
* PyTorch's ``padding`` (an int per dim, ``'same'``, ``'valid'``) and ``padding_mode``
  (``torch.nn.Conv2d``);
* Keras's ``'valid'``, ``'same'``, ``'causal'`` (``keras.layers.Conv2D``, ``Conv2DTranspose``);
* ONNX's ``pads`` and ``auto_pad`` (the ``Conv`` and ``ConvTranspose`` operator specs).

:class:`ConvConfig` is a ``lax.conv_general_dilated`` call with every argument validated and
every padding resolved to explicit pairs. Every message is
``` `name` (=value) must be ... ``` (:func:`gated_jax._validate.fail`), naming the argument as
the caller wrote it.

References:
  the JAX shape rule ``jax/_src/lax/convolution.py`` (``conv_shape_tuple``,
  ``padtype_to_pads``, ``_conv_transpose_padding``); Dumoulin and Visin, *A guide to
  convolution arithmetic for deep learning*, 2016 (arXiv:1603.07285); the PyTorch
  ``Conv2d`` / ``ConvTranspose2d`` documentation; Keras ``conv_utils.conv_output_length``;
  the ONNX operator specification of ``Conv`` and ``ConvTranspose``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jax import lax

from gated_jax._validate import fail, positive_int

_LAX_MODES = ("SAME", "SAME_LOWER", "VALID")
_FLAX_MODES = ("CIRCULAR", "REFLECT", "CAUSAL")

# How lax's argument names are spelt by each caller: messages name what the user wrote.
_LAX_NAMES = {
    k: k
    for k in (
        "lhs_shape",
        "rhs_shape",
        "window_strides",
        "padding",
        "lhs_dilation",
        "rhs_dilation",
        "dimension_numbers",
        "feature_group_count",
        "batch_group_count",
    )
}


# ----------------------------------------------------------------------------------------------
# small validated conversions (every message through gated_jax._validate.fail)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_seq(value: Any) -> bool:
    """A sequence of entries: list, tuple or 1-D+ NumPy array (not str/bytes, not a scalar)."""
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    """``int(value)`` for an int (Python or NumPy, not bool) ``>= minimum``."""
    if minimum is not None and minimum >= 0:
        return positive_int(name, value, minimum=minimum)
    if not _is_int(value):
        raise fail(name, value, "an int")
    return int(value)


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if not _is_seq(shape) or not all(_is_int(d) and d >= 0 for d in shape):
        raise fail(name, _show(shape), "a sequence of non-negative ints (a shape)")
    return tuple(int(d) for d in shape)


def _show(value: Any) -> Any:
    """A sequence as a tuple (for messages), anything else as it is."""
    if isinstance(value, (list, np.ndarray)):
        try:
            return tuple(value.tolist() if isinstance(value, np.ndarray) else value)
        except TypeError:
            return value
    return value


def _ints(
    name: str, value: Any, n: int, *, minimum: int = 1, none_ok: bool = True, scalar_ok=False
) -> tuple[int, ...]:
    """``n`` ints ``>= minimum`` from a sequence (``None``: ones; an int with ``scalar_ok``)."""
    if value is None and none_ok:
        return (1,) * n
    one = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    kind = "positive ints" if minimum == 1 else f"ints >= {minimum}"
    what = (f"{one} or " if scalar_ok else "") + f"a sequence of {n} {kind} (one per spatial dim)"
    if scalar_ok and _is_int(value):
        if value < minimum:
            raise fail(name, value, what)
        return (int(value),) * n
    if not _is_seq(value):
        raise fail(name, value, what)
    vals = tuple(value)
    if len(vals) != n:
        raise fail(name, _show(value), f"{what}, not {len(vals)} values")
    for i, v in enumerate(vals):
        if not _is_int(v) or v < minimum:
            why = "; XLA cannot lower a stride <= 0" if "stride" in name and _is_int(v) else ""
            raise fail(name, _show(value), f"{what}; entry {i} is {v!r}{why}")
    return tuple(int(v) for v in vals)


def _per_dim(name: str, value: Any, n: int, minimum: int = 1) -> tuple[int, ...]:
    """An int (every dim) or ``n`` ints ``>= minimum``, as the frameworks take kernel sizes."""
    return _ints(name, value, n, minimum=minimum, scalar_ok=True, none_ok=False)


def _sizes(name: str, value: Any, n: int | None = None, minimum: int = 0) -> tuple[int, ...]:
    """An int or a sequence of ints ``>= minimum`` as a tuple (an int is one dim, or ``n``)."""
    if n is None:
        n = len(value) if _is_seq(value) else 1
    return _per_dim(name, value, n, minimum=minimum)


def _dilate(x: int, r: int) -> int:
    """Size of ``x`` elements with ``r - 1`` zeros inserted between neighbours."""
    return 0 if x == 0 else (x - 1) * r + 1


def _out_size(padded: int, keff: int, stride: int) -> int:
    """Windows of ``keff`` at ``stride`` that fit in ``padded`` (JAX's ``stride_dim``)."""
    return max(0, (padded - keff) // stride + 1)


# ----------------------------------------------------------------------------------------------
# padding: parsed here and nowhere else


def _parse_padding(
    name: str,
    padding: Any,
    n: int,
    *,
    modes: Sequence[str] = _LAX_MODES,
    exact_case: Sequence[str] = (),
    int_ok: bool = False,
    entry_int_ok: bool = False,
    pair_for_all: bool = False,
) -> str | tuple[tuple[int, int], ...]:
    """The one padding parser: an upper-case mode string, or ``n`` ``(lo, hi)`` int pairs.

    Accepted forms: a string in ``modes`` (any case, except those in ``exact_case``); with
    ``int_ok`` an int ``p`` (``(p, p)`` on every side of every dim); a sequence of ``n``
    entries, each a ``(lo, hi)`` pair (or, with ``entry_int_ok``, an int ``p`` for
    ``(p, p)``); with ``pair_for_all`` a single ``(lo, hi)`` pair of ints for every dim.
    """
    if isinstance(padding, str):
        mode = padding if padding.upper() in exact_case else padding.upper()
        if mode in modes:
            return mode
    elif int_ok and _is_int(padding):
        return ((int(padding), int(padding)),) * n
    elif _is_seq(padding):
        entries = list(padding)
        if pair_for_all and len(entries) == 2 and all(_is_int(e) for e in entries):
            return ((int(entries[0]), int(entries[1])),) * n
        if len(entries) == n:
            pairs = []
            for e in entries:
                if entry_int_ok and _is_int(e):
                    pairs.append((int(e), int(e)))
                elif _is_seq(e) and len(e) == 2 and all(_is_int(v) for v in e):
                    pairs.append((int(e[0]), int(e[1])))
                else:
                    break
            if len(pairs) == n:
                return tuple(pairs)
    forms = [" / ".join(repr(m) for m in modes)]
    if int_ok:
        forms.append("an int (every side of every dim)")
    if pair_for_all:
        forms.append("a (lo, hi) pair of ints (every dim)")
    entry = "an int or a (lo, hi) pair" if entry_int_ok else "a (lo, hi) pair of ints"
    forms.append(f"a sequence of {n} entries (one per spatial dim), each {entry}")
    raise fail(name, _show(padding), "one of: " + "; ".join(forms))


def _same_pads(x: int, keff: int, s: int, lower: bool) -> tuple[int, int]:
    total = max(0, (-(-x // s) - 1) * s + keff - x)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _mode_pairs(
    name: str, mode: str, ins: Sequence[int], keff: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Explicit pairs of a padding mode (lax's ``padtype_to_pads`` and Flax's modes)."""
    if mode == "VALID":
        return ((0, 0),) * len(ins)
    if mode in ("SAME", "SAME_LOWER"):
        return tuple(
            _same_pads(x, ke, s, mode == "SAME_LOWER")
            for x, ke, s in zip(ins, keff, strides, strict=True)
        )
    if mode in ("CIRCULAR", "REFLECT"):
        return tuple(((ke - 1) // 2, ke // 2) for ke in keff)
    if len(ins) != 1:  # CAUSAL
        raise fail(name, mode, f"used with 1 spatial dim only (as in Flax), not {len(ins)}")
    return ((keff[0] - 1, 0),)


def _transpose_pads(keff: int, s: int, padding: Any) -> tuple[int, int]:
    """lax's ``_conv_transpose_padding`` for one dim (``padding``: the forward conv's)."""
    if padding == "SAME":
        total = keff + s - 2
        lo = keff - 1 if s > keff - 1 else math.ceil(total / 2)
    elif padding == "VALID":
        total = keff + s - 2 + max(keff - s, 0)
        lo = keff - 1
    else:
        lo, total = keff - padding[0] - 1, 2 * keff - 2 - padding[0] - padding[1]
    return lo, total - lo


_PADDING_RULES: dict[str, dict[str, bool]] = {
    "lax": {},
    "flax": {"int_ok": True, "entry_int_ok": True},
    "pair": {"int_ok": True, "pair_for_all": True},
}


def _split_same(total: int) -> tuple[int, int]:
    """``'SAME'``'s split of a total padding: ``lo = total // 2``, the extra at the end."""
    return total // 2, total - total // 2


def _flax_padding(padding: Any, n: int, kind: str) -> str | tuple[tuple[int, int], ...]:
    """Flax's ``padding`` of a ``Conv`` (``kind='conv'``) or ``ConvTranspose``.

    lax's strings in any case; ``'CIRCULAR'``, ``'REFLECT'``, ``'CAUSAL'`` (``Conv``) or
    ``'CIRCULAR'`` (``ConvTranspose``) in upper case only, as Flax tests them; an int; or one
    int or ``(lo, hi)`` pair per spatial dim.
    """
    modes = _LAX_MODES + (_FLAX_MODES if kind == "conv" else ("CIRCULAR",))
    return _parse_padding(
        "padding", padding, n, modes=modes, exact_case=_FLAX_MODES, int_ok=True, entry_int_ok=True
    )


# ----------------------------------------------------------------------------------------------
# the frameworks' padding forms

# PyTorch's padding_mode -> the jnp.pad mode that fills the same values
_TORCH_PAD_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}


def _torch_pad_mode(padding_mode: Any) -> str:
    """PyTorch's ``padding_mode`` as the ``jnp.pad`` mode filling the same values."""
    if padding_mode not in _TORCH_PAD_MODES:
        raise fail("padding_mode", padding_mode, "one of " + ", ".join(map(repr, _TORCH_PAD_MODES)))
    return _TORCH_PAD_MODES[padding_mode]


def _torch_padding(
    padding: Any, stride: Any, ks: Sequence[int], ss: Sequence[int], ds: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """PyTorch ``Conv{n}d``'s ``padding`` as ``(lo, hi)`` pairs (``stride`` as the user wrote it).

    An int or one int ``p`` per dim is ``(p, p)``; ``'valid'`` is 0; ``'same'`` (stride 1 only)
    pads a total of ``d (k - 1)`` split as ``'SAME'`` splits.
    """
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise fail("padding", padding, "an int, one int per dim, 'same' or 'valid'")
        if padding == "same" and any(s != 1 for s in ss):
            raise fail(
                "padding",
                padding,
                f"an int when stride (={stride!r}) is not 1: "
                "PyTorch refuses padding='same' for strided convolutions",
            )
        totals = [d * (k - 1) if padding == "same" else 0 for k, d in zip(ks, ds, strict=True)]
        return tuple(_split_same(t) for t in totals)
    return tuple((p, p) for p in _per_dim("padding", padding, len(ks), 0))


def _keras_padding(
    padding: Any, ks: Sequence[int], ds: Sequence[int]
) -> str | tuple[tuple[int, int], ...]:
    """Keras ``Conv*``'s ``padding``: ``'VALID'``/``'SAME'`` (lax's), or causal pairs.

    ``'causal'`` (``Conv1D`` only) pads ``(d (K - 1), 0)``, Flax's ``'CAUSAL'``.
    """
    n = len(ks)
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in ("valid", "same", "causal"):
        raise fail("padding", padding, "'valid', 'same' or 'causal'")
    if mode == "causal" and n != 1:
        raise fail(
            "padding", padding, f"'valid' or 'same' with {n} spatial dims ('causal': Conv1D)"
        )
    return (((ks[0] - 1) * ds[0], 0),) if mode == "causal" else mode.upper()


def _keras_transpose_padding(padding: Any) -> str:
    """Keras ``Conv*Transpose``'s ``padding``: ``'valid'`` or ``'same'`` (any case)."""
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in ("valid", "same"):
        raise fail("padding", padding, "'valid' or 'same' (Keras Conv*Transpose)")
    return mode


def _onnx_pads(name: str, value: Any, n: int) -> tuple[tuple[int, int], ...]:
    """ONNX ``pads`` ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` as ``(begin, end)``."""
    if value is None:
        return ((0, 0),) * n
    if not _is_seq(value) or len(value) != 2 * n or not all(_is_int(v) and v >= 0 for v in value):
        raise fail(
            name, _show(value), f"{2 * n} non-negative ints [x1_begin, ..., x1_end, ...] (ONNX)"
        )
    vals = [int(v) for v in value]
    return tuple((vals[i], vals[n + i]) for i in range(n))


_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _auto_pad(value: Any) -> str:
    """ONNX ``auto_pad``: one of ``_AUTO_PADS`` (exact case, as the spec spells them)."""
    if value not in _AUTO_PADS:
        raise fail("auto_pad", value, "one of " + ", ".join(map(repr, _AUTO_PADS)))
    return value


# ----------------------------------------------------------------------------------------------
# dimension numbers


def _dimension_numbers(name: str, dimension_numbers: Any, ndim: int) -> lax.ConvDimensionNumbers:
    """lax's ``ConvDimensionNumbers`` (``(batch/O, feature/I, spatial...)`` indices) or an error."""
    if dimension_numbers is None:
        iota = tuple(range(ndim))
        return lax.ConvDimensionNumbers(iota, iota, iota)
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        perms = []
        for spec in dimension_numbers:
            ok = _is_seq(spec) and all(_is_int(v) for v in spec)
            if not ok or sorted(int(v) for v in spec) != list(range(ndim)):
                raise fail(
                    name,
                    dimension_numbers,
                    f"a ConvDimensionNumbers whose lhs_spec, rhs_spec and out_spec are each a "
                    f"permutation of range({ndim}) (one entry per array dimension)",
                )
            perms.append(tuple(int(v) for v in spec))
        return lax.ConvDimensionNumbers(*perms)
    if (
        not isinstance(dimension_numbers, (list, tuple))
        or len(dimension_numbers) != 3
        or not all(isinstance(s, str) for s in dimension_numbers)
    ):
        raise fail(
            name,
            dimension_numbers,
            "None, three spec strings (lhs_spec, rhs_spec, out_spec) such as "
            "('NCHW', 'OIHW', 'NCHW'), or a lax.ConvDimensionNumbers",
        )
    specs = tuple(dimension_numbers)
    if any(len(s) != ndim for s in specs):
        raise fail(name, specs, f"three specs of {ndim} characters (one per array dimension)")
    try:
        perms = lax.conv_general_permutations(specs)
    except (TypeError, ValueError) as e:
        raise fail(name, specs, f"valid lax spec strings ({e})") from None
    return lax.ConvDimensionNumbers(*(tuple(int(i) for i in p) for p in perms))


# ----------------------------------------------------------------------------------------------
# the resolved configuration


def _effective_kernel(name: str, rhs, k_sp, rd) -> list[int]:
    """Dilated kernel sizes per spatial dim; an empty window (XLA cannot lower it) is refused."""
    for i, k in enumerate(k_sp):
        if k == 0:
            raise fail(
                name,
                rhs,
                f"a kernel with no zero-size window (spatial dim {i} is 0): XLA cannot "
                "lower an empty window",
            )
    return [_dilate(k, r) for k, r in zip(k_sp, rd, strict=True)]


def _check_ranks(nm: Mapping[str, str], lhs: tuple[int, ...], rhs: tuple[int, ...]) -> None:
    if len(lhs) != len(rhs):
        raise fail(nm["rhs_shape"], rhs, f"a shape of {len(lhs)} dims, as lhs_shape (={lhs}) has")


def _group_counts(
    nm: Mapping[str, str],
    lhs: tuple[int, ...],
    rhs: tuple[int, ...],
    dn: lax.ConvDimensionNumbers,
    feature_group_count: Any,
    batch_group_count: Any,
) -> tuple[int, int]:
    """The feature and batch group counts, checked against the input and kernel features."""
    batch, feat = (lhs[i] for i in dn.lhs_spec[:2])
    out_f, in_f = (rhs[i] for i in dn.rhs_spec[:2])
    g = _int(nm["feature_group_count"], feature_group_count, minimum=1)
    bg = _int(nm["batch_group_count"], batch_group_count, minimum=1)
    gname, bname = nm["feature_group_count"], nm["batch_group_count"]
    if feat % g:
        raise fail(gname, g, f"a divisor of the input features {feat} (lhs_shape={lhs})")
    if feat // g != in_f:
        raise fail(
            nm["rhs_shape"],
            rhs,
            f"a kernel with input features {feat} // {gname} (={g}) = {feat // g}, "
            f"not {in_f} (lhs_shape={lhs})",
        )
    if out_f % g:
        raise fail(gname, g, f"a divisor of the kernel's output features {out_f} (rhs_shape={rhs})")
    if bg > 1 and g > 1:
        raise fail(bname, bg, f"1 when {gname} (={g}) > 1: at most one of them may be > 1")
    if batch % bg:
        raise fail(bname, bg, f"a divisor of the input batch {batch} (lhs_shape={lhs})")
    if out_f % bg:
        raise fail(
            bname, bg, f"a divisor of the kernel's output features {out_f} (rhs_shape={rhs})"
        )
    return g, bg


def _resolve_padding(
    nm: Mapping[str, str],
    padding: Any,
    padding_rule: str,
    ld: tuple[int, ...],
    lhs_sp: Sequence[int],
    keff: Sequence[int],
    strides: tuple[int, ...],
) -> tuple[tuple[tuple[int, int], ...], str | None]:
    """Explicit pairs of ``padding`` read by ``padding_rule``, and the mode string if any."""
    pname = nm["padding"]
    if padding_rule not in _PADDING_RULES:
        raise fail("padding_rule", padding_rule, "one of " + ", ".join(map(repr, _PADDING_RULES)))
    spec = _parse_padding(pname, padding, len(ld), **_PADDING_RULES[padding_rule])  # type: ignore[arg-type]
    if not isinstance(spec, str):
        return spec, None
    if any(d != 1 for d in ld):
        raise fail(
            pname,
            padding,
            f"explicit (lo, hi) pairs when {nm['lhs_dilation']} (={ld}) is not all "
            "ones (string padding is defined for lhs_dilation 1 only)",
        )
    return _mode_pairs(pname, spec, lhs_sp, keff, strides), spec


def _spatial_out(
    pname: str,
    padding: Any,
    lhs_sp: Sequence[int],
    ld: Sequence[int],
    pads: Sequence[tuple[int, int]],
    keff: Sequence[int],
    strides: Sequence[int],
) -> list[int]:
    """Output size per spatial dim; padding cropping more than the input has is refused."""
    out_sp = []
    for i, (x, r, (lo, hi), ke, s) in enumerate(zip(lhs_sp, ld, pads, keff, strides, strict=True)):
        padded = _dilate(x, r) + lo + hi
        if padded < 0:
            raise fail(
                pname,
                _show(padding),
                f"padding that crops no more than the input has: in spatial dim {i}, "
                f"dil({x}, {r}) + {lo} + {hi} = {padded} < 0",
            )
        out_sp.append(_out_size(padded, ke, s))
    return out_sp


def _transpose_default_dn(nm: Mapping[str, str], dimension_numbers: Any, ndim: int) -> Any:
    """``lax.conv_transpose``'s default layout (TensorFlow's ``'NHWC'``, ``'HWIO'``)."""
    if dimension_numbers is not None:
        return dimension_numbers
    if not 2 <= ndim <= 5:
        raise fail(
            nm["dimension_numbers"],
            None,
            f"given for {ndim}-dim arrays: lax.conv_transpose has default dimension "
            "numbers only for 2 to 5 dims",
        )
    sp = "HWD"[: ndim - 2]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def _consistent_transpose_pads(
    pname: str, padding: Any, keff: Sequence[int], ss: Sequence[int]
) -> Any:
    """``use_consistent_padding=True``: the forward conv's pairs, as ``lax.conv_transpose``."""
    n = len(keff)
    if isinstance(padding, str) and n == 0:
        return ()  # lax resolves any string per spatial dim: with none, nothing to check
    if isinstance(padding, str):
        raise fail(
            pname,
            padding,
            "'SAME', 'VALID' (exact case) or (lo, hi) tuples when use_consistent_padding=True",
        )
    if _is_seq(padding) and not all(isinstance(p, tuple) for p in padding):
        raise fail(
            pname,
            _show(padding),
            "a sequence of (lo, hi) tuples: with use_consistent_padding=True "
            "lax.conv_transpose accepts only tuples",
        )
    fwd = _parse_padding(pname, padding, n, modes=())
    return tuple(_transpose_pads(ke, s, p) for ke, s, p in zip(keff, ss, fwd, strict=True))


def _transpose_padding(
    pname: str, padding: Any, keff: Sequence[int], ss: tuple[int, ...], consistent: bool
) -> tuple[Any, str | None]:
    """The padding ``lax.conv_transpose`` passes on (stretched input), and the mode if any.

    ``'SAME'``/``'VALID'`` (exact case) are the forward conv's padding; other strings go to
    ``conv_general_dilated`` as lax passes them: with ``lhs_dilation = strides`` they are
    accepted only when every stride is 1.
    """
    if isinstance(padding, str) and padding in ("SAME", "VALID"):
        return tuple(
            _transpose_pads(ke, s, padding) for ke, s in zip(keff, ss, strict=True)
        ), padding
    if consistent:
        return _consistent_transpose_pads(pname, padding, keff, ss), None
    if isinstance(padding, str):
        _parse_padding(pname, padding, len(keff))
        if any(s != 1 for s in ss):
            raise fail(
                pname,
                padding,
                f"'SAME', 'VALID' (exact case) or (lo, hi) pairs: with strides (={ss}) "
                "not all 1 lax.conv_transpose passes any other string to "
                "conv_general_dilated, which refuses it",
            )
    return padding, None


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    r"""A ``lax.conv_general_dilated`` configuration, validated and resolved once.

    Built by :meth:`resolve` (or :meth:`resolve_transpose` for ``lax.conv_transpose``, which is
    this convolution with ``lhs_dilation = strides`` and window stride 1). Every per-dim tuple
    is in the order of the kernel spec's spatial characters (lax's convention for
    ``window_strides`` and the dilations).

    Attributes:
      lhs_shape, rhs_shape, out_shape: the input, kernel and output shapes (Python ints).
      dimension_numbers: a ``lax.ConvDimensionNumbers``.
      strides, lhs_dilation, rhs_dilation: per spatial dim.
      padding: explicit ``(lo, hi)`` per spatial dim (any string resolved).
      padding_mode: the upper-case padding string the caller gave, or ``None``.
      feature_group_count, batch_group_count: the group counts.

    Examples:
      >>> cfg = ConvConfig.resolve((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "SAME")
      >>> cfg.out_shape, cfg.padding, cfg.out_spatial
      ((1, 1, 5, 6), ((0, 1), (1, 1)), (5, 6))
    """

    lhs_shape: tuple[int, ...]
    rhs_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dimension_numbers: lax.ConvDimensionNumbers
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    feature_group_count: int = 1
    batch_group_count: int = 1
    padding_mode: str | None = None

    @property
    def in_spatial(self) -> tuple[int, ...]:
        """Input spatial sizes :math:`H`."""
        return tuple(self.lhs_shape[i] for i in self.dimension_numbers.lhs_spec[2:])

    @property
    def kernel_spatial(self) -> tuple[int, ...]:
        """Kernel spatial sizes :math:`K`."""
        return tuple(self.rhs_shape[i] for i in self.dimension_numbers.rhs_spec[2:])

    @property
    def out_spatial(self) -> tuple[int, ...]:
        """Output spatial sizes :math:`H_\\mathrm{out}`."""
        return tuple(self.out_shape[i] for i in self.dimension_numbers.out_spec[2:])

    @property
    def kernel_eff(self) -> tuple[int, ...]:
        """Dilated kernel sizes :math:`K_\\mathrm{eff} = (K - 1) D + 1`."""
        return tuple(
            _dilate(k, d) for k, d in zip(self.kernel_spatial, self.rhs_dilation, strict=True)
        )

    @property
    def in_dilated(self) -> tuple[int, ...]:
        """:math:`\\mathrm{dil}(H, L)`: the input stretched by the input dilation."""
        return tuple(_dilate(x, a) for x, a in zip(self.in_spatial, self.lhs_dilation, strict=True))

    @property
    def out_dilated(self) -> tuple[int, ...]:
        """:math:`\\mathrm{dil}(H_\\mathrm{out}, S)`: the output stretched by the stride."""
        return tuple(_dilate(p, s) for p, s in zip(self.out_spatial, self.strides, strict=True))

    @classmethod
    @classmethod
    def resolve(
        cls,
        lhs_shape: Sequence[int],
        rhs_shape: Sequence[int],
        window_strides: Sequence[int],
        padding: Any,
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: Any = None,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        *,
        names: Mapping[str, str] | None = None,
        padding_rule: str = "lax",
    ) -> ConvConfig:
        """Validate and resolve ``lax.conv_general_dilated``'s arguments (shapes for arrays).

        Args:
          lhs_shape, rhs_shape, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, feature_group_count, batch_group_count: as
            :func:`~gated_jax.shapes.conv_output_shape` takes them.
          names: how the caller's user spells each argument, e.g.
            ``{"window_strides": "strides"}``, so that messages name what the user wrote.
          padding_rule: how ``padding`` is read besides the strings: ``'lax'`` (``n``
            ``(lo, hi)`` pairs), ``'flax'`` (also an int for every side of every dim, and
            per-dim entries that are ints or pairs) or ``'pair'`` (an int, one ``(lo, hi)``
            pair for every dim, or ``n`` pairs).

        Returns:
          The :class:`ConvConfig`.

        Raises:
          ValueError: ``` `name` (=value) must be ... ``` for every config JAX rejects, and
            for those ``jax.eval_shape`` lets through but XLA cannot compile.
        """
        nm = {**_LAX_NAMES, **(names or {})}
        lhs = _shape(nm["lhs_shape"], lhs_shape)
        rhs = _shape(nm["rhs_shape"], rhs_shape)
        if len(lhs) < 2:
            raise fail(nm["lhs_shape"], lhs, "a shape of at least 2 dims (batch and feature)")
        _check_ranks(nm, lhs, rhs)
        ndim, n = len(lhs), len(lhs) - 2
        dn = _dimension_numbers(nm["dimension_numbers"], dimension_numbers, ndim)
        lhs_sp = [lhs[i] for i in dn.lhs_spec[2:]]
        k_sp = [rhs[i] for i in dn.rhs_spec[2:]]
        g, bg = _group_counts(nm, lhs, rhs, dn, feature_group_count, batch_group_count)
        strides = _ints(nm["window_strides"], window_strides, n, none_ok=False)
        ld = _ints(nm["lhs_dilation"], lhs_dilation, n)
        rd = _ints(nm["rhs_dilation"], rhs_dilation, n)
        keff = _effective_kernel(nm["rhs_shape"], rhs, k_sp, rd)
        pads, mode = _resolve_padding(nm, padding, padding_rule, ld, lhs_sp, keff, strides)
        out_sp = _spatial_out(nm["padding"], padding, lhs_sp, ld, pads, keff, strides)
        out = [0] * ndim
        for i, p in enumerate(dn.out_spec):
            out[p] = int((lhs[dn.lhs_spec[0]] // bg, rhs[dn.rhs_spec[0]], *out_sp)[i])
        return cls(
            lhs_shape=lhs,
            rhs_shape=rhs,
            out_shape=tuple(out),
            dimension_numbers=dn,
            strides=strides,
            padding=tuple(pads),
            lhs_dilation=ld,
            rhs_dilation=rd,
            feature_group_count=g,
            batch_group_count=bg,
            padding_mode=mode,
        )

    @classmethod
    def resolve_transpose(
        cls,
        lhs_shape: Sequence[int],
        rhs_shape: Sequence[int],
        strides: Sequence[int],
        padding: Any,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: Any = None,
        transpose_kernel: bool = False,
        use_consistent_padding: bool = False,
        *,
        names: Mapping[str, str] | None = None,
    ) -> ConvConfig:
        """The ``conv_general_dilated`` config that ``lax.conv_transpose`` runs.

        Arguments as :func:`~gated_jax.shapes.conv_transpose_output_shape`; ``names`` as in
        :meth:`resolve`. The returned config has window stride 1, ``lhs_dilation = strides``
        and the explicit padding lax derives; with ``transpose_kernel=True`` its ``rhs_shape``
        is the kernel with ``I`` and ``O`` exchanged (the flip of the spatial dims does not
        change shapes).
        """
        nm = {"lhs_shape": "lhs_shape", "rhs_shape": "rhs_shape", "strides": "strides"}
        nm |= {"padding": "padding", "rhs_dilation": "rhs_dilation"}
        nm |= {"dimension_numbers": "dimension_numbers", **(names or {})}
        lhs = _shape(nm["lhs_shape"], lhs_shape)
        rhs = _shape(nm["rhs_shape"], rhs_shape)
        _check_ranks(nm, lhs, rhs)
        ndim, n = len(lhs), len(lhs) - 2
        dimension_numbers = _transpose_default_dn(nm, dimension_numbers, ndim)
        dn = _dimension_numbers(nm["dimension_numbers"], dimension_numbers, ndim)
        k_sp = [rhs[i] for i in dn.rhs_spec[2:]]
        ss = _ints(nm["strides"], strides, n, none_ok=False)
        rd = _ints(nm["rhs_dilation"], rhs_dilation, n)
        keff = _effective_kernel(nm["rhs_shape"], rhs, k_sp, rd)
        pads, mode = _transpose_padding(nm["padding"], padding, keff, ss, use_consistent_padding)
        rhs_eff = list(rhs)
        if transpose_kernel:
            o, i = dn.rhs_spec[0], dn.rhs_spec[1]
            rhs_eff[o], rhs_eff[i] = rhs[i], rhs[o]
        cfg = cls.resolve(
            lhs,
            tuple(rhs_eff),
            (1,) * n,
            pads,
            lhs_dilation=ss,
            rhs_dilation=rd,
            dimension_numbers=dn,
            names={
                "lhs_shape": nm["lhs_shape"],
                "rhs_shape": nm["rhs_shape"],
                "lhs_dilation": nm["strides"],
                "rhs_dilation": nm["rhs_dilation"],
                "padding": nm["padding"],
                "dimension_numbers": nm["dimension_numbers"],
            },
        )
        return dataclasses.replace(cfg, padding_mode=mode) if mode else cfg
