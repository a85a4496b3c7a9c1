"""Framework ports (PyTorch, Keras, ONNX; none installed): equal values in float64.

The references are the frameworks' definitions, written out here in NumPy and independent of
the code under test: a forward convolution is the padded, dilated, grouped cross-correlation
(padding by each framework's documented rule, computed here); a transposed convolution is the
adjoint of a forward convolution, each input entry scattering its kernel copy into the full
result, of which the framework keeps a window (``deconv_output_length`` and TensorFlow's
``'SAME'`` for Keras, the ONNX spec's pads for ONNX, ``padding``/``output_padding`` for
PyTorch). The adjoint property itself is checked against the forward reference.

Compiling one XLA convolution per config costs ~0.1 s, so the >= 500 configs per framework
run the ports' ``lax.conv_general_dilated`` arguments (``conv_kwargs`` / ``lax_kwargs`` and
``prepare_kernel``, exactly what the ports pass to lax) through a NumPy model of
``lax.conv_general_dilated``; that model is itself checked against ``lax`` (and the ports'
own calls against the references) on a sample of configs.
"""

from __future__ import annotations

import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gated_jax as gj
from gated_jax.testing import numpy_conv, numpy_conv_transpose

N_VALUE_CONFIGS = 500  # per framework


# ----------------------------------------------------------------------------------------------
# a NumPy model of lax.conv_general_dilated (checked against lax below)


def np_lax_conv(
    x,
    w,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
):
    n = x.ndim - 2
    sp = "DHW"[-n:] if n > 1 else "W"
    lhs_spec, rhs_spec, out_spec = dimension_numbers or ("NC" + sp, "OI" + sp, "NC" + sp)
    # to NC... / OI...
    x = np.transpose(x, [lhs_spec.index(c) for c in "NC" + sp])
    w = np.transpose(w, [rhs_spec.index(c) for c in "OI" + sp])
    if isinstance(padding, str):  # lax's own rule for the mode, on the dilated kernel
        kd = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], rhs_dilation or (1,) * n, strict=True)]
        padding = lax.padtype_to_pads(x.shape[2:], kd, window_strides, padding)
    lhs_dilation = lhs_dilation or (1,) * n
    rhs_dilation = rhs_dilation or (1,) * n
    # lhs dilation
    shape = [(h - 1) * r + 1 if h else 0 for h, r in zip(x.shape[2:], lhs_dilation, strict=True)]
    xd = np.zeros(x.shape[:2] + tuple(shape))
    xd[(slice(None), slice(None)) + tuple(slice(None, None, r) for r in lhs_dilation)] = x
    # padding (negative crops)
    for i, (lo, hi) in enumerate(padding):
        ax = 2 + i
        xd = np.pad(xd, [(0, 0)] * ax + [(max(lo, 0), max(hi, 0))] + [(0, 0)] * (n - i - 1))
        size = xd.shape[ax]
        xd = np.take(xd, range(max(-lo, 0), size - max(-hi, 0)), axis=ax)
    # rhs dilation
    ks = w.shape[2:]
    kd = [(k - 1) * d + 1 for k, d in zip(ks, rhs_dilation, strict=True)]
    wd = np.zeros(w.shape[:2] + tuple(kd))
    wd[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in rhs_dilation)] = w
    g = feature_group_count
    o, cg = wd.shape[:2]
    outs = [
        max(0, (h - k) // s + 1) for h, k, s in zip(xd.shape[2:], kd, window_strides, strict=True)
    ]
    y = np.zeros((x.shape[0], o, *outs))
    if min(outs, default=1) > 0:
        win = np.lib.stride_tricks.sliding_window_view(xd, kd, axis=tuple(range(2, 2 + n)))
        win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in window_strides)]
        og = o // g
        for grp in range(g):
            xs = win[:, grp * cg : (grp + 1) * cg]  # N, cg, *outs, *kd
            ws = wd[grp * og : (grp + 1) * og]  # og, cg, *kd
            y[:, grp * og : (grp + 1) * og] = np.tensordot(
                xs, ws, axes=([1, *range(2 + n, 2 + 2 * n)], [1, *range(2, 2 + n)])
            ).transpose((0, n + 1, *range(1, n + 1)))
    return np.transpose(y, [("NC" + sp).index(c) for c in out_spec])


def np_lax_conv_transpose(
    x, w, strides, padding, rhs_dilation=None, dimension_numbers=None, transpose_kernel=False
):
    """lax.conv_transpose: flip + swap I/O of the kernel, then the lhs-dilated conv."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    n = x.ndim - 2
    if transpose_kernel:
        sp_axes = [i for i, c in enumerate(rhs_spec) if c not in "OI"]
        w = np.flip(w, sp_axes)
        w = np.swapaxes(w, rhs_spec.index("O"), rhs_spec.index("I"))
    return np_lax_conv(x, w, (1,) * n, padding, strides, rhs_dilation, dimension_numbers)


# ----------------------------------------------------------------------------------------------
# the references: the definitions, NC... / (O, I/g, *k) layouts


ref_conv = numpy_conv  # the definitions (gated_jax.testing), shared with the verify rows
ref_conv_transpose = numpy_conv_transpose


def keff(k, d):
    return (k - 1) * d + 1


def tf_same(h, k, s, d):
    """TensorFlow's 'SAME' for one dim: total, low = total // 2."""
    total = max((math.ceil(h / s) - 1) * s + keff(k, d) - h, 0)
    return total // 2, total - total // 2


def to_last(a):
    return np.moveaxis(a, 1, -1)


def to_first(a):
    return np.moveaxis(a, -1, 1)


# ----------------------------------------------------------------------------------------------
# configs


def draw_dims(rng):
    n = 1 if rng.random() < 0.6 else 2
    ks = tuple(rng.randint(1, 4) for _ in range(n))
    ss = tuple(rng.randint(1, 3) for _ in range(n))
    ds = tuple(rng.randint(1, 2) for _ in range(n))
    return n, ks, ss, ds


def keras_dims(rng):
    """draw_dims without strides > 1 together with dilation > 1 (Keras refuses them)."""
    n, ks, ss, ds = draw_dims(rng)
    if max(ss) > 1 and max(ds) > 1:
        ds = (1,) * n
    return n, ks, ss, ds


def keras_forward(rng):
    n, ks, ss, ds = keras_dims(rng)
    padding = rng.choice(["valid", "same"] + (["causal"] if n == 1 else []))
    hs = tuple(
        rng.randint(keff(k, d) if padding == "valid" else 1, 8) for k, d in zip(ks, ds, strict=True)
    )
    return dict(
        n=n,
        ks=ks,
        ss=ss,
        ds=ds,
        hs=hs,
        padding=padding,
        groups=rng.choice([1, 2]),
        last=rng.random() < 0.7,
    )


def keras_pairs(c):
    if c["padding"] == "valid":
        return [(0, 0)] * c["n"]
    if c["padding"] == "causal":
        return [(c["ds"][0] * (c["ks"][0] - 1), 0)]
    return [
        tf_same(h, k, s, d) for h, k, s, d in zip(c["hs"], c["ks"], c["ss"], c["ds"], strict=True)
    ]


def keras_conv_output_length(h, k, padding, s, d):
    """keras conv_utils.conv_output_length."""
    if padding in ("same", "causal"):
        length = h
    else:
        length = h - keff(k, d) + 1
    return (length + s - 1) // s


def deconv_output_length(h, k, padding, output_padding, s, d):
    """keras conv_utils.deconv_output_length (transcribed from Keras's documentation)."""
    k = keff(k, d)
    if output_padding is None:
        if padding == "valid":
            return h * s + max(k - s, 0)
        return h * s
    pad = k // 2 if padding == "same" else 0
    return (h - 1) * s + k - 2 * pad + output_padding


def keras3_jax_pads(k, s, d, padding, output_padding):
    """Keras 3's JAX backend padding for lax.conv_transpose (transcribed)."""
    k = (k - 1) * d + 1
    if padding == "valid":
        op = max(k, s) - k if output_padding is None else output_padding
        return k - 1, k - 1 + op
    pad_len = s + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
    left = min(pad_len // 2 + pad_len % 2, k - 1)
    return left, pad_len - left


def keras_transpose_case(rng):
    n, ks, ss, ds = keras_dims(rng)
    padding = rng.choice(["valid", "same"])
    ops = None if rng.random() < 0.4 else tuple(rng.randint(0, s - 1) for s in ss)
    hs = tuple(rng.randint(1, 5) for _ in range(n))
    c = dict(n=n, ks=ks, ss=ss, ds=ds, hs=hs, padding=padding, ops=ops, last=rng.random() < 0.7)
    return c if min(keras_window(c)[1]) >= 1 else keras_transpose_case(rng)  # non-empty only


def keras_window(c):
    """Keras's window of the full result: T by deconv_output_length, start by TF's 'SAME'."""
    begin, size = [], []
    for i, (h, k, s, d) in enumerate(zip(c["hs"], c["ks"], c["ss"], c["ds"], strict=True)):
        op = None if c["ops"] is None else c["ops"][i]
        t = deconv_output_length(h, k, c["padding"], op, s, d)
        if c["padding"] == "valid":
            b = 0
        else:  # the 'SAME' forward conv from t to h: its low padding (TF: total // 2)
            b = max((h - 1) * s + keff(k, d) - t, 0) // 2
        begin.append(b)
        size.append(t)
    return begin, size


def onnx_forward(rng):
    n, ks, ss, ds = draw_dims(rng)
    auto = rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    pads = [rng.randint(0, 2) for _ in range(2 * n)] if auto == "NOTSET" else None
    lo = 1 if auto != "VALID" else 0
    hs = tuple(
        rng.randint(max(lo, keff(k, d) if auto == "VALID" else 1), 8)
        for k, d in zip(ks, ds, strict=True)
    )
    if auto == "NOTSET":  # keep at least one window
        hs = tuple(
            max(h, keff(k, d) - pads[i] - pads[n + i])
            for i, (h, k, d) in enumerate(zip(hs, ks, ds, strict=True))
        )
    return dict(n=n, ks=ks, ss=ss, ds=ds, hs=hs, auto=auto, pads=pads, groups=rng.choice([1, 2]))


def onnx_pairs(c):
    n = c["n"]
    if c["auto"] == "NOTSET":
        return [(c["pads"][i], c["pads"][n + i]) for i in range(n)]
    if c["auto"] == "VALID":
        return [(0, 0)] * n
    out = []
    for h, k, s, d in zip(c["hs"], c["ks"], c["ss"], c["ds"], strict=True):
        total = max((math.ceil(h / s) - 1) * s + keff(k, d) - h, 0)  # ONNX: output ceil(H/S)
        small = total // 2
        out.append((small, total - small) if c["auto"] == "SAME_UPPER" else (total - small, small))
    return out


def onnx_conv_output(c):
    """The ONNX spec's output shape of Conv."""
    out = []
    for i, (h, k, s, d) in enumerate(zip(c["hs"], c["ks"], c["ss"], c["ds"], strict=True)):
        if c["auto"] == "NOTSET":
            b, e = c["pads"][i], c["pads"][c["n"] + i]
            out.append((h + b + e - keff(k, d)) // s + 1)
        elif c["auto"] == "VALID":
            out.append(math.ceil((h - keff(k, d) + 1) / s))
        else:
            out.append(math.ceil(h / s))
    return tuple(out)


def onnx_transpose_case(rng):
    n, ks, ss, ds = draw_dims(rng)
    auto = rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    ops = [rng.randint(0, s - 1) for s in ss]  # ONNX Runtime refuses output_padding >= stride
    hs = tuple(rng.randint(1, 5) for _ in range(n))
    pads, shape = None, None
    if auto == "NOTSET":
        if rng.random() < 0.4:  # output_shape given: pads derived
            full = [
                s * (h - 1) + op + keff(k, d)
                for h, s, op, k, d in zip(hs, ss, ops, ks, ds, strict=True)
            ]
            shape = [rng.randint(max(1, f - 3), f) for f in full]  # at most the full result
        else:
            full = [
                s * (h - 1) + op + keff(k, d)
                for h, s, op, k, d in zip(hs, ss, ops, ks, ds, strict=True)
            ]
            bs = [rng.randint(0, min(2, (f - 1) // 2)) for f in full]
            es = [rng.randint(0, min(2, f - 1 - b)) for f, b in zip(full, bs, strict=True)]
            pads = bs + es
    elif auto != "VALID" and rng.random() < 0.3:
        full = [
            s * (h - 1) + op + keff(k, d)
            for h, s, op, k, d in zip(hs, ss, ops, ks, ds, strict=True)
        ]
        shape = [h * s + rng.randint(-1, 1) for h, s in zip(hs, ss, strict=True)]
        shape = [max(1, min(t, f)) for t, f in zip(shape, full, strict=True)]
    return dict(
        n=n,
        ks=ks,
        ss=ss,
        ds=ds,
        hs=hs,
        auto=auto,
        pads=pads,
        ops=ops,
        shape=shape,
        groups=rng.choice([1, 2]),
    )


def onnx_window(c):
    """ONNX spec: output_shape / pads, total_padding and the SAME_UPPER / LOWER split."""
    begin, size = [], []
    for i, (h, k, s, d) in enumerate(zip(c["hs"], c["ks"], c["ss"], c["ds"], strict=True)):
        op = c["ops"][i]
        if c["shape"] is None and c["auto"] in ("NOTSET", "VALID"):
            b, e = (c["pads"][i], c["pads"][c["n"] + i]) if c["pads"] else (0, 0)
            size.append(s * (h - 1) + op + keff(k, d) - b - e)
            begin.append(b)
            continue
        t = c["shape"][i] if c["shape"] is not None else h * s
        total = s * (h - 1) + op + keff(k, d) - t
        if c["auto"] == "SAME_UPPER":
            b = total // 2
        else:
            b = total - total // 2
        begin.append(b)
        size.append(t)
    return begin, size


# ----------------------------------------------------------------------------------------------
# building and running the ports


def keras_port(c):
    if "ops" in c:
        return gj.keras_conv_transpose(
            c["n"],
            c["ks"],
            strides=c["ss"],
            padding=c["padding"],
            output_padding=c["ops"],
            dilation_rate=c["ds"],
            data_format="channels_last" if c["last"] else "channels_first",
        )
    return gj.keras_conv(
        c["n"],
        c["ks"],
        strides=c["ss"],
        padding=c["padding"],
        dilation_rate=c["ds"],
        groups=c["groups"],
        data_format="channels_last" if c["last"] else "channels_first",
    )


def onnx_port(c):
    if "ops" in c:
        return gj.onnx_conv_transpose(
            c["ks"],
            auto_pad=c["auto"],
            pads=c["pads"],
            strides=c["ss"],
            dilations=c["ds"],
            group=c["groups"],
            output_padding=c["ops"],
            output_shape=c["shape"],
        )
    return gj.onnx_conv(
        c["ks"],
        auto_pad=c["auto"],
        pads=c["pads"],
        strides=c["ss"],
        dilations=c["ds"],
        group=c["groups"],
    )


def run_forward_port(port, x, w):
    """What the port passes to lax.conv_general_dilated, run by the NumPy model."""
    return np_lax_conv(x, w, **port.lax_kwargs())


def run_transpose_port(port, x, w, spatial):
    return np_lax_conv(x, port.prepare_kernel(w), **port.conv_kwargs(spatial))


def keras_values(c, rng):
    """(got, want) for one Keras config; data NC... in the reference."""
    g = c.get("groups", 1)
    cin, cout = 2 * g, 2 * g
    x = rng.standard_normal((2, cin, *c["hs"]))
    port = keras_port(c)
    xin = to_last(x) if c["last"] else x
    if "ops" in c:
        wk = rng.standard_normal((*c["ks"], cout, cin))  # Keras: kernel_size + (filters, C_in)
        got = run_transpose_port(port, xin, wk, c["hs"])
        w_t = np.moveaxis(np.moveaxis(wk, -1, 0), -1, 1)  # (C_in, filters, *k)
        begin, size = keras_window(c)
        want = ref_conv_transpose(x, w_t, c["ss"], c["ds"], 1, begin, size)
    else:
        wk = rng.standard_normal((*c["ks"], cin // g, cout))  # HWIO
        got = run_forward_port(port, xin, wk)
        w_o = np.moveaxis(np.moveaxis(wk, -1, 0), -1, 1)  # (O, I/g, *k)
        want = ref_conv(x, w_o, c["ss"], keras_pairs(c), c["ds"], g)
    return (to_first(got) if c["last"] else got), want


def onnx_values(c, rng):
    g = c["groups"]
    cin, cout = 2 * g, 2 * g
    x = rng.standard_normal((2, cin, *c["hs"]))
    port = onnx_port(c)
    if "ops" in c:
        w = rng.standard_normal((cin, cout // g, *c["ks"]))
        got = run_transpose_port(port, x, w, c["hs"])
        begin, size = onnx_window(c)
        want = ref_conv_transpose(x, w, c["ss"], c["ds"], g, begin, size)
    else:
        w = rng.standard_normal((cout, cin // g, *c["ks"]))
        got = run_forward_port(port, x, w)
        want = ref_conv(x, w, c["ss"], onnx_pairs(c), c["ds"], g)
    return got, want


TORCH_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def torch_case(rng, transposed):
    n, ks, ss, ds = draw_dims(rng)
    g = rng.choice([1, 2])
    if transposed:
        ops = tuple(rng.randint(0, max(s, d) - 1) for s, d in zip(ss, ds, strict=True))
        hs = tuple(rng.randint(1, 5) for _ in range(n))
        ps = tuple(
            rng.randint(0, min(d * (k - 1), ((h - 1) * s + d * (k - 1) + op) // 2))
            for h, k, s, d, op in zip(hs, ks, ss, ds, ops, strict=True)
        )
        return dict(n=n, ks=ks, ss=ss, ds=ds, hs=hs, ps=ps, ops=ops, groups=g)
    mode = rng.choice(list(TORCH_MODES))
    hs = tuple(rng.randint(keff(k, d), 8) for k, d in zip(ks, ds, strict=True))
    if rng.random() < 0.15:
        ps, ss = "same", (1,) * n
    else:
        ps = tuple(rng.randint(0, min(2, h - 1)) for h in hs)
    return dict(n=n, ks=ks, ss=ss, ds=ds, hs=hs, ps=ps, mode=mode, groups=g)


def torch_values(c, rng):
    g = c["groups"]
    cin, cout = 2 * g, 2 * g
    x = rng.standard_normal((2, cin, *c["hs"]))
    if "ops" in c:
        w = rng.standard_normal((cin, cout // g, *c["ks"]))
        port = gj.torch_conv_transpose(
            c["n"],
            c["ks"],
            stride=c["ss"],
            padding=c["ps"],
            output_padding=c["ops"],
            groups=g,
            dilation=c["ds"],
        )
        got = run_transpose_port(port, x, w, c["hs"])
        size = [
            (h - 1) * s - 2 * p + d * (k - 1) + op + 1
            for h, s, p, d, k, op in zip(
                c["hs"], c["ss"], c["ps"], c["ds"], c["ks"], c["ops"], strict=True
            )
        ]
        want = ref_conv_transpose(x, w, c["ss"], c["ds"], g, c["ps"], size)
        return got, want
    w = rng.standard_normal((cout, cin // g, *c["ks"]))
    port = gj.torch_conv(
        c["n"],
        c["ks"],
        stride=c["ss"],
        padding=c["ps"],
        dilation=c["ds"],
        groups=g,
        padding_mode=c["mode"],
    )
    xp = (
        x
        if port.pre_padding is None
        else np.pad(x, [(0, 0), (0, 0), *port.pre_padding], mode=port.pad_mode)
    )
    got = np_lax_conv(
        xp,
        w,
        port.window_strides,
        port.padding,
        None,
        port.rhs_dilation,
        None,
        port.feature_group_count,
    )
    if c["ps"] == "same":
        pairs = [
            ((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2)
            for k, d in zip(c["ks"], c["ds"], strict=True)
        ]
    else:
        pairs = [(p, p) for p in c["ps"]]
    want = ref_conv(x, w, c["ss"], pairs, c["ds"], g, TORCH_MODES[c["mode"]])
    return got, want


FRAMEWORKS = {
    "torch": (lambda rng: torch_case(rng, rng.random() < 0.5), torch_values),
    "keras": (
        lambda rng: (keras_transpose_case if rng.random() < 0.5 else keras_forward)(rng),
        keras_values,
    ),
    "onnx": (
        lambda rng: (onnx_transpose_case if rng.random() < 0.5 else onnx_forward)(rng),
        onnx_values,
    ),
}


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_ports_equal_the_definitions_on_500_configs(framework):
    draw, values = FRAMEWORKS[framework]
    rng = random.Random({"torch": 1, "keras": 2, "onnx": 3}[framework])
    nrng = np.random.default_rng(0)
    checked = 0
    for _ in range(N_VALUE_CONFIGS):
        c = draw(rng)
        got, want = values(c, nrng)
        assert got.shape == want.shape, c
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str(c))
        checked += 1
    assert checked >= 500


def test_reference_transpose_is_the_adjoint_of_the_reference_conv():
    """<conv(z), x> = <z, conv^T(x)>: the scatter reference is the forward conv's gradient."""
    rng, nrng = random.Random(11), np.random.default_rng(11)
    for _ in range(150):
        n, ks, ss, ds = draw_dims(rng)
        g = rng.choice([1, 2])
        t = tuple(rng.randint(1, 9) for _ in range(n))
        pairs = [(rng.randint(0, 2), rng.randint(0, 2)) for _ in range(n)]
        if any(
            h + lo + hi < keff(k, d) for h, (lo, hi), k, d in zip(t, pairs, ks, ds, strict=True)
        ):
            continue
        w = nrng.standard_normal((2 * g, 3, *ks))  # the forward conv's (O, I/g, *k)
        z = nrng.standard_normal((1, 3 * g, *t))
        y = ref_conv(z, w, ss, pairs, ds, g)
        x = nrng.standard_normal(y.shape)
        back = ref_conv_transpose(x, w, ss, ds, g, [lo for lo, _ in pairs], t)
        np.testing.assert_allclose(np.vdot(y, x), np.vdot(z, back), rtol=1e-11)


def test_numpy_model_of_lax_equals_lax():
    """The NumPy model that runs the ports' lax arguments, against lax itself."""
    rng, nrng = random.Random(5), np.random.default_rng(5)
    for trial in range(10):
        n = 1 + trial % 2
        ks = tuple(rng.randint(1, 3) for _ in range(n))
        ss, ld, rd = (tuple(rng.randint(1, 2) for _ in range(n)) for _ in range(3))
        g = rng.choice([1, 2])
        pads = tuple((rng.randint(-1, 2), rng.randint(-1, 2)) for _ in range(n))
        pad = rng.choice([pads, "SAME", "SAME_LOWER", "VALID"])
        sp = "HW"[-n:] if n == 2 else "W"
        dn = (rng.choice(["N" + sp + "C", "NC" + sp]), rng.choice([sp + "IO", "OI" + sp]), None)
        dn = (dn[0], dn[1], dn[0])
        x = nrng.standard_normal(tuple({"N": 2, "C": 2 * g}.get(c, 6) for c in dn[0]))
        w = nrng.standard_normal(
            tuple({"O": 2 * g, "I": 2}.get(c, 0) or ks[sp.index(c)] for c in dn[1])
        )
        kw = dict(lhs_dilation=ld, rhs_dilation=rd, dimension_numbers=dn, feature_group_count=g)
        if not isinstance(pad, str) or trial % 3:
            pad = pads if not isinstance(pad, str) else pad
        want = lax.conv_general_dilated(
            x, w, ss, pad, **(kw if not isinstance(pad, str) else {**kw, "lhs_dilation": None})
        )
        got = np_lax_conv(
            x, w, ss, pad, **(kw if not isinstance(pad, str) else {**kw, "lhs_dilation": None})
        )
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        if g == 1:
            pt = tuple((abs(lo), abs(hi)) for lo, hi in pads)
            want = lax.conv_transpose(x, w, ss, pt, rd, dn, transpose_kernel=bool(trial % 2))
            got = np_lax_conv_transpose(x, w, ss, pt, rd, dn, transpose_kernel=bool(trial % 2))
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _sample(draw, seed, count):
    rng = random.Random(seed)
    return [draw(rng) for _ in range(count)]


@pytest.mark.parametrize("framework", ["keras", "onnx"])
def test_ports_own_calls_and_lax_and_flax_arguments(framework):
    """The ports' calls (one XLA conv each), lax.conv_transpose and Flax with their kwargs."""
    import flax.linen as fnn

    draw, values = FRAMEWORKS[framework]
    cases = _sample(draw, 21, 40)
    fwd = [c for c in cases if "ops" not in c and c.get("last", True) and c["groups"] == 1][:2]
    tr = [c for c in cases if "ops" in c and c.get("last", True) and c.get("groups", 1) == 1][:2]
    assert len(fwd) == 2 and len(tr) == 2
    nrng = np.random.default_rng(1)
    for c in fwd + tr:
        port = keras_port(c) if framework == "keras" else onnx_port(c)
        x = nrng.standard_normal((1, 2, *c["hs"]))
        transposed = "ops" in c
        if framework == "keras":
            w = nrng.standard_normal((*c["ks"], 2, 2))
            x_in = to_last(x)
            kernel = gj.kernel_from_keras(w, transposed=transposed)
        else:
            w = nrng.standard_normal((2, 2, *c["ks"]))
            x_in = x
            kernel = gj.kernel_from_torch(w, transposed=transposed)
        b = nrng.standard_normal(2)
        got = np.asarray(port(x_in, w, b))
        if framework == "keras":
            got = to_first(got)
        if transposed:
            begin, size = (keras_window if framework == "keras" else onnx_window)(c)
            w_t = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1) if framework == "keras" else w
            want = ref_conv_transpose(x, w_t, c["ss"], c["ds"], 1, begin, size)
            lax_y = lax.conv_transpose(x_in, w, **port.lax_kwargs(c["hs"]))
            module = fnn.ConvTranspose(2, use_bias=False, **port.flax_kwargs(c["hs"]))
        else:
            pairs = keras_pairs(c) if framework == "keras" else onnx_pairs(c)
            w_o = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1) if framework == "keras" else w
            want = ref_conv(x, w_o, c["ss"], pairs, c["ds"], 1)
            lax_y = lax.conv_general_dilated(x_in, w, **port.lax_kwargs())
            module = fnn.Conv(2, use_bias=False, **port.flax_kwargs())
        want_b = want + b.reshape((1, -1) + (1,) * c["n"])
        np.testing.assert_allclose(got, want_b, rtol=1e-12, atol=1e-12)
        lax_y = np.asarray(lax_y)
        np.testing.assert_allclose(
            to_first(lax_y) if framework == "keras" else lax_y, want, rtol=1e-12, atol=1e-12
        )
        flax_y = module.apply({"params": {"kernel": kernel}}, to_last(x))
        np.testing.assert_allclose(to_first(np.asarray(flax_y)), want, rtol=1e-12, atol=1e-12)


def test_keras_transpose_padding_equals_keras3s_jax_backend():
    rng, checked = random.Random(3), 0
    for _ in range(3000):
        c = keras_transpose_case(rng)
        port = keras_port(c)
        for i, pair in enumerate(port.padding_for(c["hs"])):
            op = None if c["ops"] is None else c["ops"][i]
            assert pair == keras3_jax_pads(c["ks"][i], c["ss"][i], c["ds"][i], c["padding"], op)
            checked += 1
    assert checked >= 3000


def test_documented_output_sizes_on_many_configs():
    """conv_output_length / deconv_output_length (Keras) and the ONNX spec, against the ports
    (``output_shape``) on 2,000 configs each and ``jax.eval_shape`` of the calls on 60 each."""
    counts = dict.fromkeys(["keras conv", "keras transpose", "onnx conv", "onnx transpose"], 0)
    rng = random.Random(9)
    for trial in range(2000):
        for kind in counts:
            framework, what = kind.split()
            draws = {
                "keras conv": keras_forward,
                "keras transpose": keras_transpose_case,
                "onnx conv": onnx_forward,
                "onnx transpose": onnx_transpose_case,
            }
            c = draws[kind](rng)
            port = keras_port(c) if framework == "keras" else onnx_port(c)
            if kind == "keras conv":
                want = tuple(
                    keras_conv_output_length(h, k, c["padding"], s, d)
                    for h, k, s, d in zip(c["hs"], c["ks"], c["ss"], c["ds"], strict=True)
                )
            elif kind == "keras transpose":
                want = tuple(keras_window(c)[1])
            elif kind == "onnx conv":
                want = onnx_conv_output(c)
            else:
                want = tuple(onnx_window(c)[1])
                if min(want) < 1:
                    continue
            assert port.output_shape(c["hs"]) == want, (kind, c)
            if trial < 60:
                last = c.get("last", False)
                g = c.get("groups", 1)
                xs = (1, *c["hs"], 2 * g) if last else (1, 2 * g, *c["hs"])
                if what == "conv":
                    ws = (*c["ks"], 2, 2 * g) if framework == "keras" else (2 * g, 2, *c["ks"])
                else:
                    ws = (*c["ks"], 2, 2) if framework == "keras" else (2 * g, 2, *c["ks"])
                out = jax.eval_shape(
                    port,
                    jax.ShapeDtypeStruct(xs, jnp.float32),
                    jax.ShapeDtypeStruct(ws, jnp.float32),
                ).shape
                assert (out[1:-1] if last else out[2:]) == want, (kind, c)
            counts[kind] += 1
    assert min(counts.values()) >= 1900, counts


def test_kernel_layouts_give_equal_convolutions():
    """PyTorch weights through kernel_from_torch: the NHWC lax convolution equals the port."""
    rng, nrng = random.Random(4), np.random.default_rng(4)
    checked = 0
    for _ in range(300):
        transposed = rng.random() < 0.5
        c = torch_case(rng, transposed)
        g = c["groups"]
        x = nrng.standard_normal((1, 2 * g, *c["hs"]))
        if transposed:
            w = nrng.standard_normal((2 * g, 2, *c["ks"]))
            port = gj.torch_conv_transpose(
                c["n"],
                c["ks"],
                stride=c["ss"],
                padding=c["ps"],
                output_padding=c["ops"],
                groups=g,
                dilation=c["ds"],
            )
            want = run_transpose_port(port, x, w, c["hs"])
            pads = port.conv_kwargs(c["hs"])["padding"]
            sp = "HW"[-c["n"] :] if c["n"] == 2 else "W"
            dn = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
            k_flipped = np.asarray(
                gj.kernel_from_torch(w, transposed=True, transpose_kernel=False, groups=g)
            )
            got = np_lax_conv(to_last(x), k_flipped, (1,) * c["n"], pads, c["ss"], c["ds"], dn, g)
            if g == 1:
                k = np.asarray(gj.kernel_from_torch(w, transposed=True))
                again = np_lax_conv_transpose(to_last(x), k, c["ss"], pads, c["ds"], dn, True)
                np.testing.assert_allclose(to_first(again), want, rtol=1e-12, atol=1e-12)
            back = gj.kernel_to_torch(k_flipped, transposed=True, transpose_kernel=False, groups=g)
        else:
            c["mode"], c["ps"] = "zeros", c["ps"] if c["ps"] != "same" else (0,) * c["n"]
            w = nrng.standard_normal((2 * g, 2, *c["ks"]))
            port = gj.torch_conv(
                c["n"], c["ks"], stride=c["ss"], padding=c["ps"], dilation=c["ds"], groups=g
            )
            want = np_lax_conv(
                x, w, port.window_strides, port.padding, None, port.rhs_dilation, None, g
            )
            sp = "HW"[-c["n"] :] if c["n"] == 2 else "W"
            dn = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
            k = np.asarray(gj.kernel_from_torch(w))
            got = np_lax_conv(
                to_last(x), k, port.window_strides, port.padding, None, port.rhs_dilation, dn, g
            )
            back = gj.kernel_to_torch(k)
        np.testing.assert_allclose(to_first(got), want, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(back), w)
        checked += 1
    assert checked >= 300
    kk = np.random.default_rng(0).standard_normal((3, 2, 4, 5))
    flipped = gj.kernel_from_keras(kk, transposed=True, transpose_kernel=False)
    np.testing.assert_array_equal(
        np.asarray(gj.kernel_to_keras(flipped, transposed=True, transpose_kernel=False)), kk
    )


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: gj.keras_conv(2, 3, padding="causal"), "padding"),
        (lambda: gj.keras_conv(1, 3, padding="full"), "padding"),
        (lambda: gj.keras_conv(1, 3, data_format="NHWC"), "data_format"),
        (lambda: gj.keras_conv(4, 3), "spatial_dims"),
        (lambda: gj.keras_conv_transpose(1, 3, strides=2, output_padding=2), "output_padding"),
        (lambda: gj.keras_conv_transpose(1, 3, padding="causal"), "padding"),
        (lambda: gj.onnx_conv((3,), auto_pad="SAME"), "auto_pad"),
        (lambda: gj.onnx_conv((3, 3), pads=[1, 1]), "pads"),
        (lambda: gj.onnx_conv((3,), strides=[0]), "strides"),
        (lambda: gj.onnx_conv_transpose((3,), output_shape=[1, 2, 3, 4]), "output_shape"),
        (lambda: gj.onnx_conv_transpose((3,), group=0), "group"),
        (lambda: gj.onnx_conv_transpose((3,), group=2).lax_kwargs((4,)), "groups"),
    ],
)
def test_bad_port_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^`{name}` \(="):
        call()


@pytest.mark.parametrize("value", [3, (), (1, 2, 3, 4), (3, 0)])
def test_onnx_kernel_shape_is_checked(value):
    with pytest.raises(ValueError, match=r"^`kernel_shape` \(="):
        gj.onnx_conv(value)
    with pytest.raises(ValueError, match=r"^`kernel_shape` \(="):
        gj.onnx_conv_transpose(value)


def test_a_config_xla_aborts_on_with_lhs_dilation_runs_under_jit():
    """lax.conv_transpose / lhs_dilation abort XLA's CPU simplifier on this config (the padded
    input no larger than the kernel); the ports stretch the input themselves, also under jit."""
    c = dict(n=2, ks=(2, 2), ss=(2, 3), ds=(1, 2), hs=(4, 1), padding="same", ops=(0, 0), last=True)
    begin, size = keras_window(c)  # Keras refuses strides > 1 with dilation > 1: as ONNX
    port = gj.onnx_conv_transpose(c["ks"], strides=c["ss"], dilations=c["ds"], output_shape=size)
    assert port.padding_for(c["hs"]) == ((0, 0), (1, 1))
    nrng = np.random.default_rng(0)
    x, w = nrng.standard_normal((1, 2, 4, 1)), nrng.standard_normal((2, 2, 2, 2))
    want = ref_conv_transpose(x, w, c["ss"], c["ds"], 1, begin, size)
    got = jax.jit(port)(x, w)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
    t = gj.torch_conv_transpose(2, 2, stride=(2, 3), dilation=(1, 2), padding=(0, 1))
    w_t = nrng.standard_normal((2, 2, 2, 2))
    y = jax.jit(t)(x, w_t)
    size_t = t.output_shape((4, 1))
    np.testing.assert_allclose(
        np.asarray(y),
        ref_conv_transpose(x, w_t, (2, 3), (1, 2), 1, (0, 1), size_t),
        rtol=1e-12,
        atol=1e-12,
    )


# ----------------------------------------------------------------------------------------------
# what the frameworks refuse, and the ports checked against themselves (issue 27)


def _raises(name, call):
    with pytest.raises(ValueError, match=rf"^`{name}` \(=.*\) must be "):
        call()


def test_torch_ports_check_the_weight_against_the_layer():
    """A width-5 weight in a width-3 layer: refused, not a result of another size."""
    x = jnp.ones((1, 1, 10))
    same = gj.torch_conv(1, 3, padding="same")
    _raises("weight", lambda: same(x, jnp.ones((1, 1, 5))))
    t = gj.torch_conv_transpose(1, 3, stride=2)
    assert t.output_shape((10,)) == (21,)
    _raises("weight", lambda: t(x, jnp.ones((1, 1, 5))))
    _raises("weight", lambda: same(jnp.ones((1, 2, 10)), jnp.ones((1, 1, 3))))  # C / groups
    _raises(
        "groups", lambda: gj.torch_conv(1, 3, groups=2)(jnp.ones((1, 3, 10)), jnp.ones((2, 1, 3)))
    )
    _raises("weight", lambda: t(jnp.ones((1, 2, 10)), jnp.ones((1, 1, 3))))  # C_in


def test_a_keras_port_with_mismatched_channels_names_the_argument():
    conv = gj.keras_conv(2, 3)
    _raises("kernel", lambda: conv(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 2, 4))))
    _raises("kernel", lambda: conv(jnp.ones((1, 8, 8, 3)), jnp.ones((5, 3, 3, 4))))
    grouped = gj.keras_conv(2, 3, groups=2)
    _raises("groups", lambda: grouped(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 1, 4))))
    tconv = gj.keras_conv_transpose(1, 3)
    _raises("kernel", lambda: tconv(jnp.ones((1, 8, 3)), jnp.ones((3, 4, 2))))


def test_empty_forward_outputs_are_refused_as_the_frameworks_refuse_them():
    torch = gj.torch_conv(2, (5, 5), stride=3)
    _raises("x", lambda: torch(jnp.ones((1, 1, 8, 4)), jnp.ones((2, 1, 5, 5))))
    _raises("input_spatial", lambda: torch.output_shape((8, 4)))
    assert torch.output_shape((8, 5)) == (2, 1)
    keras = gj.keras_conv(1, 5)
    _raises("x", lambda: keras(jnp.ones((1, 2, 4)), jnp.ones((5, 4, 4))))
    _raises("input_spatial", lambda: keras.output_shape((2,)))
    onnx = gj.onnx_conv([4, 4], dilations=[2, 3], group=3, auto_pad="VALID")
    _raises("input_spatial", lambda: onnx.output_shape((7, 7)))
    _raises("x", lambda: onnx(jnp.ones((2, 3, 7, 7)), jnp.ones((6, 1, 4, 4))))


def test_an_empty_transposed_output_shape_raises():
    _raises("padding", lambda: gj.torch_conv_transpose(1, 3, padding=5).output_shape((2,)))
    onnx = gj.onnx_conv_transpose((3,), pads=[5, 5])
    _raises("input_spatial", lambda: onnx.output_shape((2,)))
    keras = gj.keras_conv_transpose(1, 2, strides=2, padding="same", output_padding=0)
    _raises("input_spatial", lambda: keras.output_shape((1,)))  # Keras 3 returns (1, 0, 4)
    assert keras.output_shape((2,)) == (2,)


@pytest.mark.parametrize(
    "mode, ok, bad", [("reflect", 3, 4), ("circular", 4, 5), ("replicate", 9, None)]
)
def test_torch_padding_mode_limits_are_pytorchs(mode, ok, bad):
    x, w = jnp.arange(4.0).reshape(1, 1, 4), jnp.ones((1, 1, 3))
    assert gj.torch_conv(1, 3, padding=ok, padding_mode=mode)(x, w).shape == (1, 1, 2 + 2 * ok)
    if bad is not None:
        port = gj.torch_conv(1, 3, padding=bad, padding_mode=mode)
        _raises("padding", lambda: port(x, w))
        _raises("padding", lambda: port.output_shape((4,)))
    # 'same' with a dilated kernel on length 1 pads (2, 2): more than one wrap
    same = gj.torch_conv(1, 3, padding="same", dilation=2, padding_mode="circular")
    _raises("padding", lambda: same.output_shape((1,)))


def test_torch_output_size_may_be_the_full_shape_as_in_pytorch():
    t = gj.torch_conv_transpose(2, 3, stride=2, padding=1)
    x, w = jnp.ones((2, 1, 5, 4)), jnp.ones((1, 2, 3, 3))
    full = t(x, w, output_size=(2, 2, 10, 8))
    np.testing.assert_array_equal(full, t(x, w, output_size=(10, 8)))
    assert full.shape == (2, 2, 10, 8)
    assert t.output_padding_for((5, 4), [2, 2, 10, 8]) == (1, 1)
    _raises("output_size", lambda: t.output_padding_for((5, 4), (2, 10, 8)))


def test_keras_refuses_strides_with_dilation():
    _raises("dilation_rate", lambda: gj.keras_conv(2, 3, strides=(2, 1), dilation_rate=(1, 2)))
    _raises("dilation_rate", lambda: gj.keras_conv_transpose(1, 3, strides=2, dilation_rate=2))
    assert gj.keras_conv(2, 3, strides=(2, 1)).window_strides == (2, 1)


def test_onnx_refuses_what_the_spec_refuses():
    _raises("pads", lambda: gj.onnx_conv([3], auto_pad="SAME_UPPER", pads=[1, 1]))
    _raises("pads", lambda: gj.onnx_conv([3], auto_pad="VALID", pads=[0, 0]))
    _raises("pads", lambda: gj.onnx_conv_transpose([3], auto_pad="SAME_LOWER", pads=[1, 1]))
    tconv = gj.onnx_conv_transpose
    _raises("output_padding", lambda: tconv([3], strides=[2], output_padding=[2]))
    _raises("output_padding", lambda: tconv([3], strides=[2], dilations=[3], output_padding=[2]))
    _raises("output_padding", lambda: tconv([3], strides=[2], output_padding=1))
    _raises("output_shape", lambda: tconv([3], strides=[2], output_shape=[1, 2, 10]))
    past = tconv([3], strides=[2], output_shape=[8])  # the full result of 3 is 7
    _raises("output_shape", lambda: past.output_shape((3,)))
    _raises("output_shape", lambda: past(jnp.ones((1, 1, 3)), jnp.ones((1, 2, 3))))
    assert tconv([3], strides=[2], output_shape=[7]).output_shape((3,)) == (7,)


@pytest.mark.parametrize("bad", ["no", "False", 1, None])
@pytest.mark.parametrize("flag", ["transposed", "transpose_kernel"])
def test_kernel_helpers_take_bools_only(flag, bad):
    w = np.zeros((2, 2, 3))
    for helper in (gj.kernel_from_torch, gj.kernel_to_torch, gj.kernel_from_keras):
        _raises(flag, lambda h=helper: h(w, **{flag: bad}))
    assert gj.kernel_from_torch(w, transposed=np.bool_(True)).shape == (3, 2, 2)


def test_torch_conv_lax_and_flax_kwargs_compute_the_port():
    from flax import linen as nn

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 2))
    port = gj.torch_conv(2, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    want = np.asarray(port(x, w))
    assert want.shape[2:] == port.output_shape((9, 8))
    np.testing.assert_allclose(lax.conv_general_dilated(x, w, **port.lax_kwargs()), want)
    assert port.padding_for((9, 8)) == ((1, 1), (2, 2))
    x_last, k = np.moveaxis(x, 1, -1), gj.kernel_from_torch(w)
    layer = nn.Conv(6, use_bias=False, dtype=x.dtype, param_dtype=x.dtype, **port.flax_kwargs())
    got = layer.apply({"params": {"kernel": k}}, x_last)
    np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), want, rtol=1e-12, atol=1e-12)
    for mode, flax_mode in (("reflect", "REFLECT"), ("circular", "CIRCULAR")):
        p = gj.torch_conv(2, 3, padding="same", padding_mode=mode)
        assert p.flax_kwargs()["padding"] == flax_mode
        w3 = rng.standard_normal((3, 4, 3, 3))
        layer = nn.Conv(3, use_bias=False, dtype=x.dtype, param_dtype=x.dtype, **p.flax_kwargs())
        got = layer.apply({"params": {"kernel": gj.kernel_from_torch(w3)}}, x_last)
        np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), p(x, w3), atol=1e-12)
        _raises("padding_mode", p.lax_kwargs)
    _raises("padding_mode", gj.torch_conv(1, 3, padding=1, padding_mode="replicate").flax_kwargs)
    _raises("padding_mode", gj.torch_conv(1, 4, padding=1, padding_mode="reflect").flax_kwargs)


def test_torch_conv_transpose_lax_and_flax_kwargs_compute_the_port():
    from flax import linen as nn

    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((3, 2, 3, 2))
    t = gj.torch_conv_transpose(2, (3, 2), stride=(2, 3), padding=(1, 0), dilation=(1, 2))
    for size in (None, (10, 13), (2, 2, 9, 14)):
        want = np.asarray(t(x, w, output_size=size))
        kw = t.lax_kwargs((5, 4), size)
        np.testing.assert_allclose(lax.conv_transpose(x, w, **kw), want, rtol=1e-12, atol=1e-12)
        layer = nn.ConvTranspose(
            2, use_bias=False, dtype=x.dtype, param_dtype=x.dtype, **t.flax_kwargs((5, 4), size)
        )
        k = gj.kernel_from_torch(w, transposed=True)
        got = layer.apply({"params": {"kernel": k}}, np.moveaxis(x, 1, -1))
        np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), want, atol=1e-12)
        assert t.padding_for((5, 4), size) == kw["padding"]
    _raises("groups", lambda: gj.torch_conv_transpose(1, 3, groups=2).lax_kwargs((5,)))


def test_torch_transpose_padding_for_output_is_pytorchs_split():
    """PyTorch's (padding, output_padding) give the size; the generic answer's window starts
    floor(E / 2), PyTorch's ceil(E / 2) (E the total): one entry apart for an odd E."""
    rng = random.Random(3)
    shifted = 0
    for _ in range(300):
        h, k, s, d = rng.randint(1, 6), rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 2)
        t = rng.randint(1, (h - 1) * s + d * (k - 1) + max(s, d))
        try:
            (p,), (op,) = gj.torch_transpose_padding_for_output(h, t, k, stride=s, dilation=d)
        except ValueError as e:  # only the wrong parity at stride and dilation 1
            assert s == d == 1 and ((h + k - 1) - t) % 2 == 1, e
            continue
        port = gj.torch_conv_transpose(1, k, stride=s, dilation=d, padding=p, output_padding=op)
        assert port.output_shape((h,)) == (t,)
        ((lo, _),) = gj.transpose_padding_for_output(h, t, k, stride=s, dilation=d)
        ((tlo, _),) = port.padding_for((h,))
        shifted += lo != tlo
        assert lo - tlo in (0, 1)  # the generic window starts at most one entry earlier
    assert shifted > 10
    _raises("output_size", lambda: gj.torch_transpose_padding_for_output(5, 20, 3, stride=2))
    _raises("output_size", lambda: gj.torch_transpose_padding_for_output(5, 6, 3))  # parity
