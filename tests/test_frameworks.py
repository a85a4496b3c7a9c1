"""The ports against the frameworks themselves: PyTorch, Keras 3 (JAX backend), ONNX Runtime.

Each framework's real layers (``Conv{1,2,3}d`` / ``ConvTranspose{1,2,3}d``, Keras
``Conv{1,2,3}D`` / ``Conv{1,2,3}DTranspose``, ONNX ``Conv`` / ``ConvTranspose`` nodes run by
ONNX Runtime) are built on seeded random configurations with random weights; the weights go
through the kernel helpers into the ports, and every configuration the framework accepts must
be accepted by the port with exactly the framework's output shape and its values (float64 for
PyTorch and Keras, to 1e-9; float32 for ONNX Runtime, which has no float64 convolution).

The same configurations (with the forms at the edges of what each framework accepts switched
on, and the issue's own examples) check acceptance: what the framework refuses the port
refuses with a ``ValueError`` in the one format, and the other way round, but for the
departures each port documents (:func:`documented_departure`). Where ONNX Runtime departs from
the ONNX spec the ports follow the spec, and its reference evaluator ``onnx.reference`` is the
framework (:func:`departs_from_spec`).

Without the frameworks each part skips: ``pip install -e '.[test,frameworks]'`` to run them.

Cost: all the ports' calls of one part run as one jitted program (and the Keras layers as
another), so each part compiles once instead of once per configuration.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gated_jax as gj

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # PyTorch's notes on 'same'
    # Keras reading its variables with np.array(..., copy=False) under NumPy 2
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning"),
]

HOW = "pip install -e '.[test,frameworks]' to run the ports against the real frameworks"
CONFIGS = 200  # per framework: half forward, half transposed
SEED = 20260


def _import_torch():
    torch = pytest.importorskip("torch", reason=f"PyTorch is not installed: {HOW}")
    torch.set_num_threads(1)
    return torch


def _import_keras():
    os.environ["KERAS_BACKEND"] = "jax"  # before the first import of keras
    keras = pytest.importorskip("keras", minversion="3", reason=f"Keras 3 is not installed: {HOW}")
    if keras.backend.backend() != "jax":
        pytest.skip(f"Keras runs on {keras.backend.backend()!r}; these tests need its JAX backend")
    return keras


def _import_onnx():
    onnx = pytest.importorskip("onnx", reason=f"ONNX is not installed: {HOW}")
    ort = pytest.importorskip("onnxruntime", reason=f"ONNX Runtime is not installed: {HOW}")
    return onnx, ort


# ----------------------------------------------------------------------------------------------
# one configuration, its framework result and its port


@dataclasses.dataclass
class Case:
    """One layer configuration and what the framework and the port made of it."""

    framework: str
    transposed: bool
    n: int
    args: dict[str, Any]  # the layer's arguments as the framework takes them
    x: np.ndarray
    call: dict[str, Any] = dataclasses.field(default_factory=dict)  # call-time arguments
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    want: np.ndarray | None = None  # the framework's output
    refused: str | None = None  # the framework's error
    port: Any = None  # the port's callable (x, w, b) -> y, or None
    port_shape: tuple[int, ...] | None = None
    port_refused: str | None = None  # the port's error
    extra: list = dataclasses.field(default_factory=list)  # more routes (name, fn, args)
    got: np.ndarray | None = None  # the port's output (run_ports)
    extra_got: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # the routes'
    layer: Any = None  # the Keras layer
    runtime: Any = None  # ONNX Runtime's shape or error where onnx.reference is the oracle

    def describe(self) -> str:
        shape = tuple(self.x.shape)
        kind = "transpose" if self.transposed else "conv"
        return f"{self.framework} {kind}{self.n}d x{shape} {self.args} {self.call}"


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def port_outcome(case: Case, make, *args) -> None:
    """Build the port (``make()`` -> callable) and trace it on the case's arrays."""
    try:
        fn = make()
        out = jax.eval_shape(fn, *args)
    except Exception as e:  # its type is part of the record (a ValueError is expected)
        case.port_refused = _error(e)
        return
    case.port, case.port_shape = fn, tuple(out.shape)


def run_ports(cases: list[Case], args_of) -> None:
    """Every accepted case's port (and extra routes) in ONE jitted program; results stored
    in ``case.got`` and ``case.extra_got``."""
    live = [c for c in cases if c.refused is None and c.port is not None]
    fns = [c.port for c in live]
    extras = [(i, name, fn) for i, c in enumerate(live) for name, fn, _ in c.extra]

    @jax.jit
    def everything(main_args, extra_args):
        main = [f(*a) for f, a in zip(fns, main_args, strict=True)]
        more = [fn(*a) for (_, _, fn), a in zip(extras, extra_args, strict=True)]
        return main, more

    main_args = [args_of(c) for c in live]
    extra_args = [a for c in live for _, _, a in c.extra]
    main, more = jax.device_get(everything(main_args, extra_args))
    for c, y in zip(live, main, strict=True):
        c.got = np.asarray(y)
    for (i, name, _), y in zip(extras, more, strict=True):
        live[i].extra_got[name] = np.asarray(y)


def check_agreement(cases: list[Case], rtol: float, atol_scale: float, least: int) -> None:
    """Every case the framework accepts: the port accepts it, the same shape, the same values
    (``|got - want| <= atol_scale * max|want| + rtol * |want|``); at least ``least`` such."""
    accepted = [c for c in cases if c.refused is None and not documented_departure(c)]
    assert len(accepted) >= least, f"only {len(accepted)} of {len(cases)} configs accepted"
    bad = []
    for c in accepted:
        if c.port_refused is not None:
            bad.append(
                f"{c.describe()}: the framework gives {c.want.shape}, the port refuses: "
                f"{c.port_refused}"
            )
            continue
        if c.port_shape != c.want.shape:
            bad.append(f"{c.describe()}: shape {c.port_shape} != framework's {c.want.shape}")
            continue
        scale = max(float(np.abs(c.want).max(initial=0.0)), 1.0)
        for name, got in [("port", c.got), *c.extra_got.items()]:
            if got.shape != c.want.shape:
                bad.append(f"{c.describe()}: {name} shape {got.shape} != {c.want.shape}")
            elif not np.allclose(got, c.want, rtol=rtol, atol=atol_scale * scale):
                err = float(np.abs(got - c.want).max())
                bad.append(f"{c.describe()}: {name} values differ by {err:.3g}")
    assert not bad, f"{len(bad)} of {len(accepted)} disagree:\n" + "\n".join(bad[:20])


def documented_departure(c: Case) -> bool:
    """Where the port refuses, on purpose and documented, what the framework returns.

    * an empty output (Keras 3's ``Conv*Transpose`` with ``padding='same'``, an even dilated
      kernel, ``output_padding=0`` and an input of size 1): every port refuses empty outputs,
      as PyTorch and the forward layers of Keras and ONNX Runtime do;
    * an ONNX ``output_shape`` past the full result (a negative total padding, which the spec
      does not define; ONNX Runtime appends zeros up to ``stride - 1`` entries past it, where
      ``onnx.reference`` puts some of them first).
    """
    if c.port_refused is None or not c.port_refused.startswith("ValueError"):
        return False
    if c.refused is None and c.want.size == 0:
        return "non-empty output" in c.port_refused
    return (
        c.framework == "onnx"
        and "`output_shape`" in c.port_refused
        and "full result" in (c.port_refused)
    )


def check_acceptance(cases: list[Case]) -> None:
    """Configs the framework refuses are refused by the port (a ``ValueError`` in the one
    format), and the other way round, but for :func:`documented_departure`; configs where
    ``onnx.reference`` (the oracle where ONNX Runtime departs from the spec) itself fails
    are left out."""
    bad = []
    for c in cases:
        if c.refused is not None and c.refused.startswith("onnx.reference "):
            continue
        fw_ok, port_ok = c.refused is None, c.port_refused is None
        if not port_ok and not (
            c.port_refused.startswith("ValueError: `") and " must be " in c.port_refused
        ):
            bad.append(f"{c.describe()}: the port's error is not the one format: {c.port_refused}")
        elif fw_ok != port_ok and not documented_departure(c):
            fw = f"gives {c.want.shape}" if fw_ok else f"refuses: {c.refused}"
            port = f"gives {c.port_shape}" if port_ok else f"refuses: {c.port_refused}"
            bad.append(f"{c.describe()}: the framework {fw}; the port {port}")
    refused = sum(c.refused is not None for c in cases)
    assert refused >= 5, f"only {refused} of {len(cases)} configs refused: no edge reached"
    assert not bad, f"{len(bad)} of {len(cases)} disagree:\n" + "\n".join(bad[:20])


# ----------------------------------------------------------------------------------------------
# random configurations


def _per_dim(rng, n: int, lo: int, hi: int, as_int_p: float = 0.4):
    """An int (same in every dim) or a tuple of one per dim, in ``[lo, hi]``."""
    if rng.random() < as_int_p:
        return int(rng.integers(lo, hi + 1))
    return tuple(int(v) for v in rng.integers(lo, hi + 1, n))


def _tup(v, n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


_MAX_SIZE = {1: 12, 2: 7, 3: 5}


def _spatial(rng, n: int, keff: tuple[int, ...], fit: bool) -> tuple[int, ...]:
    """Input sizes; ``fit``: mostly at least the dilated kernel (a non-empty output)."""
    hi = _MAX_SIZE[n]
    lo = [min(k, hi) if fit else 1 for k in keff]
    return tuple(int(rng.integers(a, hi + 1)) for a in lo)


def _keff(k, d, n: int) -> tuple[int, ...]:
    return tuple((kk - 1) * dd + 1 for kk, dd in zip(_tup(k, n), _tup(d, n), strict=True))


def torch_config(rng, transposed: bool, edges: bool = False) -> dict[str, Any]:
    """A ``Conv{n}d`` / ``ConvTranspose{n}d`` config: module args, input shape, call args.

    ``edges``: also ``output_size`` as the full shape ``(N, C_out, *spatial)`` (PyTorch takes
    either form).
    """
    n = int(rng.integers(1, 4))
    g = int(rng.choice([1, 1, 2, 3]))
    cin, cout = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    k = _per_dim(rng, n, 1, 4 if n < 3 else 3)
    s = _per_dim(rng, n, 1, 3)
    d = _per_dim(rng, n, 1, 3 if n < 3 else 2)
    args: dict[str, Any] = dict(
        in_channels=cin, out_channels=cout, kernel_size=k, stride=s, dilation=d, groups=g
    )
    args["bias"] = bool(rng.random() < 0.7)
    spatial = _spatial(rng, n, _keff(k, d, n), fit=rng.random() < 0.85)
    call: dict[str, Any] = {}
    if not transposed:
        form = rng.choice(["int", "tuple", "same", "valid"], p=[0.35, 0.35, 0.15, 0.15])
        if form in ("same", "valid"):
            args["padding"] = str(form)
            if form == "same" and rng.random() < 0.8:
                args["stride"] = 1  # PyTorch refuses 'same' with a stride
        else:
            args["padding"] = _per_dim(rng, n, 0, 3, as_int_p=1.0 if form == "int" else 0.0)
        args["padding_mode"] = str(rng.choice(["zeros", "reflect", "replicate", "circular"]))
    else:
        args["padding"] = _per_dim(rng, n, 0, 3)
        ss, ds = _tup(args["stride"], n), _tup(d, n)
        if rng.random() < 0.5:
            args["output_padding"] = tuple(
                int(rng.integers(0, max(a, b))) for a, b in zip(ss, ds, strict=True)
            )
        elif rng.random() < 0.5:  # output_size at call time, within PyTorch's range
            ps = _tup(args["padding"], n)
            least = [
                (h - 1) * a - 2 * p + dd * (kk - 1) + 1
                for h, a, p, dd, kk in zip(spatial, ss, ps, ds, _tup(k, n), strict=True)
            ]
            size = [m + int(rng.integers(0, a)) for m, a in zip(least, ss, strict=True)]
            full = edges and rng.random() < 0.5
            batch = int(rng.integers(1, 3))
            call["output_size"] = [batch, cout, *size] if full else size
            call["batch"] = batch
    batch = call.pop("batch", int(rng.integers(1, 3)))
    return dict(n=n, args=args, shape=(batch, cin, *spatial), call=call)


def torch_case(torch, cfg: dict, transposed: bool, seed: int) -> Case:
    """Run the PyTorch module (float64, random weights) and trace the port on the same
    arrays (whether or not PyTorch accepts the config)."""
    n, args, call = cfg["n"], dict(cfg["args"]), dict(cfg["call"])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["shape"])
    case = Case("torch", transposed, n, args, x, call)
    cin, cout, g = args["in_channels"], args["out_channels"], args["groups"]
    channels = (cin, cout // g) if transposed else (cout, cin // g)
    case.weight = rng.standard_normal(channels + _tup(args["kernel_size"], n))
    case.bias = rng.standard_normal(cout) if args["bias"] else None
    name = f"ConvTranspose{n}d" if transposed else f"Conv{n}d"
    try:
        module = getattr(torch.nn, name)(**args, dtype=torch.float64)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(case.weight))
            if case.bias is not None:
                module.bias.copy_(torch.from_numpy(case.bias))
            case.want = module(torch.from_numpy(x), **call).numpy()
    except (ValueError, RuntimeError, TypeError) as e:
        case.refused = _error(e)
    common = dict(
        kernel_size=args["kernel_size"],
        stride=args["stride"],
        padding=args["padding"],
        dilation=args["dilation"],
        groups=args["groups"],
    )
    if transposed:

        def make():
            port = gj.torch_conv_transpose(
                n, output_padding=args.get("output_padding", 0), **common
            )
            return lambda x, w, b: port(x, w, b, **call)

    else:

        def make():
            port = gj.torch_conv(n, padding_mode=args["padding_mode"], **common)
            return lambda x, w, b: port(x, w, b)

    port_outcome(case, make, x, case.weight, case.bias)
    if case.port is not None and case.refused is None:
        case.extra.append(_torch_channels_last_route(case, make))
    return case


def _torch_channels_last_route(case: Case, make):
    """The same layer as one channels-last ``lax.conv_general_dilated`` with the kernel from
    :func:`gated_jax.kernel_from_torch` (transposed: ``transpose_kernel=False``, the kernel of
    the stride-1 convolution of the stretched input, which is stretched here in NumPy)."""
    n, args = case.n, case.args
    last = "N" + "DHW"[3 - n :] + "C"
    dn = (last, "DHW"[3 - n :] + "IO", last)
    to_last = (0, *range(2, n + 2), 1)
    to_first = (0, n + 1, *range(1, n + 1))
    x = case.x.transpose(to_last)
    b = case.bias
    if not case.transposed:
        port = gj.torch_conv(
            n,
            args["kernel_size"],
            stride=args["stride"],
            padding=args["padding"],
            dilation=args["dilation"],
            groups=args["groups"],
            padding_mode=args["padding_mode"],
        )
        k = gj.kernel_from_torch(case.weight)

        def route(x, k, b):
            if port.pre_padding is not None:
                x = jnp.pad(x, ((0, 0), *port.pre_padding, (0, 0)), mode=port.pad_mode)
            y = lax.conv_general_dilated(
                x,
                k,
                port.window_strides,
                port.padding,
                rhs_dilation=port.rhs_dilation,
                feature_group_count=port.feature_group_count,
                dimension_numbers=dn,
            )
            y = y if b is None else y + b.reshape((1,) * (n + 1) + (-1,))
            return y.transpose(to_first)

        return ("channels-last lax, kernel_from_torch", route, (x, k, b))
    port = gj.torch_conv_transpose(
        n,
        args["kernel_size"],
        stride=args["stride"],
        padding=args["padding"],
        output_padding=args.get("output_padding", 0),
        dilation=args["dilation"],
        groups=args["groups"],
    )
    kw = port.conv_kwargs(case.x.shape[2:], case.call.get("output_size"))
    stride = kw["lhs_dilation"]
    stretched = np.zeros(
        (
            x.shape[0],
            *[(h - 1) * s + 1 for h, s in zip(x.shape[1:-1], stride, strict=True)],
            x.shape[-1],
        )
    )
    stretched[(slice(None), *[slice(None, None, s) for s in stride])] = x
    k = gj.kernel_from_torch(
        case.weight, transposed=True, transpose_kernel=False, groups=args["groups"]
    )

    def route(x, k, b):
        y = lax.conv_general_dilated(
            x,
            k,
            (1,) * n,
            kw["padding"],
            rhs_dilation=kw["rhs_dilation"],
            feature_group_count=kw["feature_group_count"],
            dimension_numbers=dn,
        )
        y = y if b is None else y + b.reshape((1,) * (n + 1) + (-1,))
        return y.transpose(to_first)

    return (
        "stretched channels-last lax, kernel_from_torch(transpose_kernel=False)",
        route,
        (stretched, k, b),
    )


def _torch_args(c: Case):
    return (c.x, c.weight, c.bias)


def torch_cases(torch, transposed: bool, count: int, seed: int, edges: bool = False):
    rng = np.random.default_rng(seed)
    return [
        torch_case(torch, torch_config(rng, transposed, edges), transposed, seed + i)
        for i in range(count)
    ]


def torch_edge_configs() -> list[tuple[bool, dict[str, Any]]]:
    """The issue's PyTorch examples and the edges near them: ``(transposed, config)``."""
    c = dict(in_channels=1, out_channels=2, groups=1, bias=True, dilation=1)

    def conv(shape, **kw):
        return False, dict(n=len(shape) - 2, args=dict(c, **kw), shape=shape, call={})

    def tconv(shape, call=None, **kw):
        return True, dict(n=len(shape) - 2, args=dict(c, **kw), shape=shape, call=call or {})

    z = dict(stride=1, padding_mode="zeros")
    return [
        conv((1, 1, 8, 4), kernel_size=(5, 5), padding=0, **dict(z, stride=3)),  # empty
        conv((1, 1, 4), kernel_size=3, padding=4, **dict(z, padding_mode="reflect")),
        conv((1, 1, 4), kernel_size=3, padding=3, **dict(z, padding_mode="reflect")),
        conv((1, 1, 4), kernel_size=3, padding=5, **dict(z, padding_mode="circular")),
        conv((1, 1, 4), kernel_size=3, padding=4, **dict(z, padding_mode="circular")),
        conv((1, 1, 1), kernel_size=3, padding="same", **dict(z, padding_mode="circular")),
        conv((1, 1, 8), kernel_size=3, padding="same", **dict(z, stride=2)),
        tconv((1, 1, 5), dict(output_size=[1, 2, 10]), kernel_size=3, stride=2, padding=1),
        tconv((2, 1, 5, 4), dict(output_size=(2, 2, 10, 8)), kernel_size=3, stride=2, padding=1),
        tconv((1, 1, 2), kernel_size=3, stride=1, padding=5),  # empty
        tconv((1, 1, 4), kernel_size=3, stride=2, padding=0, output_padding=2),
        tconv((1, 1, 4), dict(output_size=[11]), kernel_size=3, stride=2, padding=0),
    ]


_CASES: dict[tuple[str, bool], list[Case]] = {}


def cached(key: tuple[str, bool], build) -> list[Case]:
    """The cases of one part, built (and their ports run) once for the value and the
    acceptance tests."""
    if key not in _CASES:
        _CASES[key] = build()
    return _CASES[key]


def torch_all_cases(transposed: bool) -> list[Case]:
    torch = _import_torch()

    def build():
        cases = torch_cases(torch, transposed, CONFIGS // 2, SEED + 1000 * transposed, True)
        edges = [cfg for tr, cfg in torch_edge_configs() if tr == transposed]
        cases += [torch_case(torch, cfg, transposed, SEED + 7 + i) for i, cfg in enumerate(edges)]
        run_ports(cases, _torch_args)
        return cases

    return cached(("torch", transposed), build)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv", "ConvTranspose"])
def test_torch_ports_equal_pytorch(transposed):
    cases = torch_all_cases(transposed)
    check_agreement(cases, rtol=1e-9, atol_scale=1e-9, least=CONFIGS // 5)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv", "ConvTranspose"])
def test_torch_ports_refuse_what_pytorch_refuses(transposed):
    check_acceptance(torch_all_cases(transposed))


# ----------------------------------------------------------------------------------------------
# Keras 3 on its JAX backend


def keras_config(rng, transposed: bool, edges: bool = False) -> dict[str, Any]:
    """A ``Conv{n}D`` / ``Conv{n}DTranspose`` config: layer args and input shape.

    ``edges``: also strides > 1 together with dilation > 1, ``'causal'`` beyond ``Conv1D`` and
    ``output_padding`` up to the stride (Keras refuses all three).
    """
    n = int(rng.integers(1, 4))
    g = 1 if transposed else int(rng.choice([1, 1, 2, 3]))
    cin, filters = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    k = _per_dim(rng, n, 1, 4 if n < 3 else 3)
    s = _per_dim(rng, n, 1, 3)
    d = _per_dim(rng, n, 1, 3 if n < 3 else 2)
    if not edges or rng.random() < 0.75:  # Keras refuses strides > 1 with dilation > 1
        if rng.random() < 0.5:
            s = 1
        else:
            d = 1
    modes = ["valid", "same"] + (["causal"] if (n == 1 or edges) and not transposed else [])
    args: dict[str, Any] = dict(
        filters=filters,
        kernel_size=k,
        strides=s,
        padding=str(rng.choice(modes)),
        data_format=str(rng.choice(["channels_last", "channels_first"])),
        dilation_rate=d,
        use_bias=bool(rng.random() < 0.7),
    )
    if transposed:
        if rng.random() < 0.5:
            hi = [a + (1 if edges else 0) for a in _tup(s, n)]
            args["output_padding"] = tuple(int(rng.integers(0, h)) for h in hi)
    else:
        args["groups"] = g
    spatial = _spatial(rng, n, _keff(k, d, n), fit=transposed or rng.random() < 0.85)
    batch = int(rng.integers(1, 3))
    last = args["data_format"] == "channels_last"
    shape = (batch, *spatial, cin) if last else (batch, cin, *spatial)
    return dict(n=n, args=args, shape=shape)


def keras_case(keras, cfg: dict, transposed: bool, seed: int) -> Case:
    """Build the Keras layer (float64, random kernel and bias) and trace the port on the same
    arrays (whether or not Keras accepts the config)."""
    n, args = cfg["n"], dict(cfg["args"])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["shape"])
    case = Case("keras", transposed, n, args, x)
    last = args["data_format"] == "channels_last"
    cin, filters, g = x.shape[-1 if last else 1], args["filters"], args.get("groups", 1)
    channels = (filters, cin) if transposed else (cin // g, filters)
    weight = rng.standard_normal(_tup(args["kernel_size"], n) + channels)
    case.bias = rng.standard_normal(filters) if args["use_bias"] else None
    name = f"Conv{n}DTranspose" if transposed else f"Conv{n}D"
    # the weights as initializers (Keras's own would compile a program per kernel shape)
    inits = dict(
        kernel_initializer=lambda shape, dtype=None: weight,
        bias_initializer=lambda shape, dtype=None: case.bias,
    )
    try:
        layer = getattr(keras.layers, name)(**args, dtype="float64", **inits)
        layer.build(x.shape)
        case.want = jax.eval_shape(layer, x)  # a shape for now: values in run_keras_layers
        case.layer = layer
    except ValueError as e:
        case.refused = _error(e)
    common = dict(
        strides=args["strides"],
        padding=args["padding"],
        data_format=args["data_format"],
        dilation_rate=args["dilation_rate"],
    )
    if transposed:
        kernel = gj.kernel_from_keras(weight, transposed=True)

        def make():
            port = gj.keras_conv_transpose(
                n, args["kernel_size"], output_padding=args.get("output_padding"), **common
            )
            return lambda x, k, b: port(x, k, b)

    else:
        kernel = gj.kernel_from_keras(weight)

        def make():
            port = gj.keras_conv(n, args["kernel_size"], groups=args["groups"], **common)
            return lambda x, k, b: port(x, k, b)

    case.weight = kernel
    port_outcome(case, make, x, kernel, case.bias)
    flax_ok = not transposed and last and case.refused is None
    if case.port is not None and flax_ok:
        case.extra.append(_flax_route(case))
    return case


def _flax_route(case: Case):
    """The forward port's ``flax_kwargs()`` in a ``flax.linen.Conv`` (channels-last data,
    ``HWIO`` kernel) with the case's kernel and bias."""
    args = case.args
    port = gj.keras_conv(
        case.n,
        args["kernel_size"],
        strides=args["strides"],
        padding=args["padding"],
        data_format=args["data_format"],
        dilation_rate=args["dilation_rate"],
        groups=args["groups"],
    )
    return ("flax.linen.Conv(**flax_kwargs())",) + _flax_conv(port, case.weight, case.bias, case.x)


def _flax_conv(port, kernel, bias, x):
    from flax import linen as nn

    layer = nn.Conv(
        features=kernel.shape[-1],
        use_bias=bias is not None,
        dtype=x.dtype,
        param_dtype=x.dtype,
        **port.flax_kwargs(),
    )
    params = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
    return (lambda x, p: layer.apply({"params": p}, x)), (x, params)


def run_keras_layers(cases: list[Case]) -> None:
    """Every accepted case's Keras layer in ONE jitted program: ``case.want`` becomes values."""
    live = [c for c in cases if c.refused is None]
    layers = [c.layer for c in live]
    outs = jax.jit(lambda xs: [f(x) for f, x in zip(layers, xs, strict=True)])([c.x for c in live])
    for c, y in zip(live, jax.device_get(outs), strict=True):
        c.want = np.asarray(y)


def keras_cases(keras, transposed: bool, count: int, seed: int, edges: bool = False):
    rng = np.random.default_rng(seed)
    return [
        keras_case(keras, keras_config(rng, transposed, edges), transposed, seed + i)
        for i in range(count)
    ]


def keras_edge_configs() -> list[tuple[bool, dict[str, Any]]]:
    """The issue's Keras examples and the edges near them: ``(transposed, config)``."""
    base = dict(filters=4, strides=1, dilation_rate=1, data_format="channels_last", use_bias=True)

    def layer(transposed, shape, **kw):
        return transposed, dict(n=len(shape) - 2, args=dict(base, **kw), shape=shape)

    return [
        layer(False, (1, 2, 4), kernel_size=5, padding="valid", groups=1),  # empty
        layer(
            False, (1, 9, 4), kernel_size=3, padding="valid", groups=1, strides=2, dilation_rate=2
        ),
        layer(False, (1, 5, 5, 4), kernel_size=2, padding="causal", groups=1),
        layer(True, (1, 4, 4), kernel_size=3, padding="valid", strides=2, dilation_rate=2),
        layer(True, (1, 1, 4), kernel_size=2, padding="same", strides=2, output_padding=0),
        layer(True, (1, 1, 4), kernel_size=4, padding="same", strides=1, output_padding=0),
        layer(True, (1, 4, 4), kernel_size=3, padding="valid", strides=2, output_padding=2),
    ]


def keras_all_cases(transposed: bool) -> list[Case]:
    keras = _import_keras()

    def build():
        seed = SEED + 2000 + 1000 * transposed
        cases = keras_cases(keras, transposed, CONFIGS // 2, seed, True)
        edges = [cfg for tr, cfg in keras_edge_configs() if tr == transposed]
        cases += [keras_case(keras, cfg, transposed, seed + 11 + i) for i, cfg in enumerate(edges)]
        run_keras_layers(cases)
        run_ports(cases, _torch_args)
        return cases

    return cached(("keras", transposed), build)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv", "ConvTranspose"])
def test_keras_ports_equal_keras(transposed):
    cases = keras_all_cases(transposed)
    check_agreement(cases, rtol=1e-9, atol_scale=1e-9, least=CONFIGS // 5)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv", "ConvTranspose"])
def test_keras_ports_refuse_what_keras_refuses(transposed):
    check_acceptance(keras_all_cases(transposed))


# ----------------------------------------------------------------------------------------------
# ONNX, run by ONNX Runtime


def onnx_config(rng, transposed: bool, edges: bool = False) -> dict[str, Any]:
    """A ``Conv`` / ``ConvTranspose`` node's attributes and its input and weight shapes.

    ``edges``: also ``pads`` together with an ``auto_pad`` other than ``NOTSET`` (the spec
    refuses it), ``output_padding`` up to ``max(stride, dilation)`` (ONNX Runtime refuses
    ``>= stride``) and an ``output_shape`` past the full result (a negative total padding,
    which the spec does not define: the port refuses it, ONNX Runtime appends zeros up to
    ``stride - 1`` entries past it).
    """
    n = int(rng.integers(1, 4))
    g = int(rng.choice([1, 1, 2, 3]))
    c, m = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    ks = [int(v) for v in rng.integers(1, 5 if n < 3 else 4, n)]
    attrs: dict[str, Any] = {"kernel_shape": ks}
    if rng.random() < 0.8:
        attrs["strides"] = [int(v) for v in rng.integers(1, 4, n)]
    if rng.random() < 0.7:
        attrs["dilations"] = [int(v) for v in rng.integers(1, 4 if n < 3 else 3, n)]
    if g > 1 or rng.random() < 0.2:
        attrs["group"] = g
    mode = str(
        rng.choice(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"], p=[0.5, 0.2, 0.15, 0.15])
    )
    if mode != "NOTSET" or rng.random() < 0.2:
        attrs["auto_pad"] = mode
    if (mode == "NOTSET" and rng.random() < 0.8) or (edges and rng.random() < 0.3):
        attrs["pads"] = [int(v) for v in rng.integers(0, 3, 2 * n)]
    ss, ds = attrs.get("strides", [1] * n), attrs.get("dilations", [1] * n)
    keff = [(k - 1) * d + 1 for k, d in zip(ks, ds, strict=True)]
    spatial = _spatial(rng, n, tuple(keff), fit=transposed or rng.random() < 0.85)
    if transposed:
        if rng.random() < 0.4:
            top = [max(s, d) + (1 if edges else 0) for s, d in zip(ss, ds, strict=True)]
            attrs["output_padding"] = [int(rng.integers(0, t)) for t in top]
        if rng.random() < 0.3:  # at most the full result (more only with edges)
            ops = attrs.get("output_padding", [0] * n)
            full = [
                s * (h - 1) + o + ke for h, s, o, ke in zip(spatial, ss, ops, keff, strict=True)
            ]
            attrs["output_shape"] = [
                int(max(1, f + int(rng.integers(-3, 3 if edges else 1)))) for f in full
            ]
        wshape = (c, m // g, *ks)
        out_c = m
    else:
        wshape = (m, c // g, *ks)
        out_c = m
    batch = int(rng.integers(1, 3))
    return dict(
        n=n,
        attrs=attrs,
        shape=(batch, c, *spatial),
        wshape=wshape,
        bias=rng.random() < 0.7,
        out_c=out_c,
    )


def departs_from_spec(transposed: bool, attrs: dict) -> bool:
    """Where ONNX Runtime departs from the ONNX spec, which the ports follow: it refuses
    ``Conv`` with ``SAME_*`` and dilations > 1, and its ``SAME_*`` ``ConvTranspose`` differs
    from the spec when a dilated kernel is shorter than the stride. There the spec's own
    reference evaluator (``onnx.reference``) is the framework (elsewhere it is not: its
    ``ConvTranspose`` fails on many grouped and dilated configs that ONNX Runtime runs)."""
    if not attrs.get("auto_pad", "NOTSET").startswith("SAME") or "pads" in attrs:
        return False  # pads with auto_pad: the spec refuses, as ONNX Runtime does
    ks = attrs["kernel_shape"]
    ss = attrs.get("strides", [1] * len(ks))
    ds = attrs.get("dilations", [1] * len(ks))
    if not transposed:
        return max(ds) > 1
    return any((k - 1) * d + 1 < s for k, s, d in zip(ks, ss, ds, strict=True))


def onnx_run(onnx, ort, op: str, attrs: dict, x, w, b, reference: bool = False):
    """The ONNX node ``op`` with ``attrs`` on ``(x, w, b)``, run by ONNX Runtime (CPU), or by
    ``onnx.reference`` with ``reference``."""
    from onnx import TensorProto, helper

    names = ["X", "W"] + (["B"] if b is not None else [])
    arrays = [x, w] + ([b] if b is not None else [])
    inputs = [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, list(a.shape))
        for k, a in zip(names, arrays, strict=True)
    ]
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    node = helper.make_node(op, names, ["Y"], **attrs)
    graph = helper.make_graph([node], op, inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = dict(zip(names, arrays, strict=True))
    if reference:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, feeds)[0]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4  # ORT's own error log: the exception carries the message
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)[0]


def onnx_case(onnx, ort, cfg: dict, transposed: bool, seed: int) -> Case:
    """Run the node in ONNX Runtime (float32) and set up the port (float64 of the same
    float32 values)."""
    rng = np.random.default_rng(seed)
    n, attrs = cfg["n"], dict(cfg["attrs"])
    x = rng.standard_normal(cfg["shape"]).astype(np.float32)
    w = rng.standard_normal(cfg["wshape"]).astype(np.float32)
    b = rng.standard_normal(cfg["out_c"]).astype(np.float32) if cfg["bias"] else None
    case = Case("onnx", transposed, n, attrs, x.astype(np.float64))
    op = "ConvTranspose" if transposed else "Conv"
    try:
        spec = departs_from_spec(transposed, attrs)
        case.want = onnx_run(onnx, ort, op, attrs, x, w, b, reference=spec).astype(np.float64)
    except Exception as e:  # ONNX Runtime's own exception types
        case.refused = ("onnx.reference " if spec else "") + _error(e)
    if spec:  # what ONNX Runtime does instead (test_onnx_runtime_departs_only_as_documented)
        try:
            case.runtime = onnx_run(onnx, ort, op, attrs, x, w, b).shape
        except Exception as e:
            case.runtime = _error(e)
    case.weight = w.astype(np.float64)
    case.bias = None if b is None else b.astype(np.float64)
    kw = {k: v for k, v in attrs.items() if k != "kernel_shape"}
    factory = gj.onnx_conv_transpose if transposed else gj.onnx_conv

    def make():
        port = factory(attrs["kernel_shape"], **kw)
        return lambda x, w, b: port(x, w, b)

    port_outcome(case, make, case.x, case.weight, case.bias)
    if case.port is not None and not transposed and case.refused is None:
        port = factory(attrs["kernel_shape"], **kw)
        x_last = case.x.transpose((0, *range(2, n + 2), 1))
        fn, args = _flax_conv(port, gj.kernel_from_torch(case.weight), case.bias, x_last)
        to_first = (0, n + 1, *range(1, n + 1))
        route = lambda x, p, fn=fn: fn(x, p).transpose(to_first)
        case.extra.append(("flax.linen.Conv(**flax_kwargs()), kernel_from_torch", route, args))
    return case


def onnx_cases(onnx, ort, transposed: bool, count: int, seed: int, edges: bool = False):
    rng = np.random.default_rng(seed)
    return [
        onnx_case(onnx, ort, onnx_config(rng, transposed, edges), transposed, seed + i)
        for i in range(count)
    ]


def onnx_edge_configs() -> list[tuple[bool, dict[str, Any]]]:
    """The issue's ONNX examples and the edges near them: ``(transposed, config)``."""

    def node(transposed, shape, **attrs):
        c_in, k = shape[1], attrs["kernel_shape"]
        wshape = (c_in, 2, *k) if transposed else (2, c_in, *k)
        cfg = dict(n=len(shape) - 2, attrs=attrs, shape=shape, wshape=wshape, bias=True, out_c=2)
        return transposed, cfg

    return [
        node(False, (1, 1, 6), kernel_shape=[3], auto_pad="SAME_UPPER", pads=[1, 1]),
        node(False, (1, 1, 6), kernel_shape=[3], auto_pad="VALID", pads=[2, 2]),
        node(False, (1, 1, 2), kernel_shape=[5]),  # empty
        node(False, (1, 1, 7), kernel_shape=[3], auto_pad="SAME_LOWER", dilations=[2]),
        node(True, (1, 1, 4), kernel_shape=[3], strides=[2], output_padding=[2]),
        node(True, (1, 1, 4), kernel_shape=[3], strides=[2], dilations=[3], output_padding=[2]),
        node(True, (1, 1, 4), kernel_shape=[3], strides=[2], dilations=[3], output_padding=[3]),
        node(True, (1, 1, 4), kernel_shape=[3], auto_pad="SAME_UPPER", pads=[1, 1], strides=[2]),
        node(True, (1, 1, 2), kernel_shape=[3], pads=[5, 5]),  # empty
        node(True, (1, 1, 5), kernel_shape=[3], strides=[2], output_shape=[1, 2, 10]),
        node(True, (1, 1, 3), kernel_shape=[3], strides=[2], output_shape=[8]),  # past full
    ]


def onnx_all_cases(transposed: bool) -> list[Case]:
    onnx, ort = _import_onnx()

    def build():
        seed = SEED + 4000 + 1000 * transposed
        cases = onnx_cases(onnx, ort, transposed, CONFIGS // 2, seed, True)
        edges = [cfg for tr, cfg in onnx_edge_configs() if tr == transposed]
        cases += [
            onnx_case(onnx, ort, cfg, transposed, seed + 13 + i) for i, cfg in enumerate(edges)
        ]
        run_ports(cases, _torch_args)
        return cases

    return cached(("onnx", transposed), build)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv", "ConvTranspose"])
def test_onnx_ports_equal_onnxruntime(transposed):
    cases = onnx_all_cases(transposed)
    check_agreement(cases, rtol=1e-5, atol_scale=1e-5, least=CONFIGS // 5)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv", "ConvTranspose"])
def test_onnx_ports_refuse_what_onnx_refuses(transposed):
    check_acceptance(onnx_all_cases(transposed))


def test_onnx_runtime_departs_from_the_spec_only_as_documented():
    """Where ``onnx.reference`` stands in for ONNX Runtime (:func:`departs_from_spec`), ONNX
    Runtime departs from the spec only in the two documented ways: it refuses ``Conv`` with
    ``SAME_*`` and a dilation > 1, and its ``SAME_*`` ``ConvTranspose`` returns the full
    result :math:`S (H - 1) + o + K_\\mathrm{eff}` (the total padding clamped at 0) where the
    spec's ``H * S`` is longer."""
    cases = [c for tr in (False, True) for c in onnx_all_cases(tr) if c.runtime is not None]
    assert len(cases) >= 10, f"only {len(cases)} configs where ONNX Runtime departs"
    bad = []
    for c in cases:
        if not c.transposed:
            ok = isinstance(c.runtime, str) and "Dilation not supported" in c.runtime
        elif c.port_shape is None:  # refused by the port: ONNX Runtime refuses too
            ok = isinstance(c.runtime, str) or documented_departure(c)
        else:
            a = c.args
            n = c.n
            ss, ds = a.get("strides", [1] * n), a.get("dilations", [1] * n)
            ops = a.get("output_padding", [0] * n)
            full = [
                s * (h - 1) + o + (k - 1) * d + 1
                for h, s, o, k, d in zip(c.x.shape[2:], ss, ops, a["kernel_shape"], ds, strict=True)
            ]
            clamped = c.port_shape[:2] + tuple(
                min(t, f) for t, f in zip(c.port_shape[2:], full, strict=True)
            )
            ok = c.runtime == clamped
        if not ok:
            bad.append(f"{c.describe()}: ONNX Runtime {c.runtime}, the port {c.port_shape}")
    assert not bad, f"{len(bad)} undocumented departures:\n" + "\n".join(bad[:20])
