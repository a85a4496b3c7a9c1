"""``gated-jax shape``: a convolution's output shape with its derivation and warnings.

``gated-jax shape 10x11 --kernel 3 --stride 2`` prints ``4 x 5`` and the rule
with the numbers substituted. Per-dimension values are written ``AxB``; padding is an int, a
``lo,hi`` pair, one of those per dim (``1,2x0,0``), or ``SAME``/``SAME_LOWER``/``VALID``.

``--target 32`` (or ``32x32``) gives the inverse direction: the padding that gives that
output size (``padding_for_output``; with ``--transposed``, the ``lax.conv_transpose`` padding
of ``transpose_padding_for_output``), with the window of totals that work and the derivation
of the result.

``--from-torch 'ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)'`` (and
``--from-keras 'Conv2DTranspose(8, 3, strides=2, padding="same")'``, ``--from-onnx
'ConvTranspose(kernel_shape=[3, 3], strides=[2, 2], output_shape=[64, 64])'``) prints the
output size for the input size and the equivalent ``lax`` call and Flax module, channels last,
with the kernel conversion (``gated_jax.kernel_from_torch`` / ``kernel_from_keras``).
"""

from __future__ import annotations

from gated_jax._validate import fail, int_text, ints_text, positive_int

HELP = "output shape of a convolution, with the derivation and warnings"


def add_arguments(p) -> None:
    p.add_argument("input", help="spatial input size, e.g. 10x11 (H x W) or 32")
    p.add_argument("--kernel", "-k", help="kernel size: K or KhxKw (required without --from-*)")
    p.add_argument("--stride", "-s", default="1", help="stride: S or ShxSw (default 1)")
    p.add_argument(
        "--padding",
        "-p",
        default="0",
        help="P (both sides), lo,hi, per dim 1,2x0,0, or SAME / SAME_LOWER / VALID (default 0)",
    )
    p.add_argument("--dilation", "-d", default="1", help="kernel dilation: D or DhxDw")
    p.add_argument("--input-dilation", default="1", help="input (lhs) dilation: L or LhxLw")
    p.add_argument("--channels", "-c", help="input channels C")
    p.add_argument("--filters", "-f", help="number of filters F (output channels)")
    p.add_argument("--groups", "-g", default="1", help="feature groups G (default 1)")
    p.add_argument(
        "--transposed",
        action="store_true",
        help="explain lax.conv_transpose (stride = input dilation) instead",
    )
    p.add_argument(
        "--target",
        "-t",
        help="wanted output size T or ThxTw: print the padding that gives it (ignores --padding)",
    )
    for name, example in _FROM_EXAMPLES.items():
        p.add_argument(
            f"--from-{name}",
            metavar="LAYER",
            help=f"a {name} layer, e.g. {example!r}: print its JAX / Flax equivalent",
        )


_FROM_EXAMPLES = {
    "torch": "ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)",
    "keras": "Conv2D(8, 3, strides=2, padding='same')",
    "onnx": "ConvTranspose(kernel_shape=[3, 3], strides=[2, 2], output_shape=[64, 64])",
}


def _one(vals: tuple[int, ...]):
    return vals[0] if len(vals) == 1 else vals


def _padding(text: str, ndim: int):
    if text.upper() in ("SAME", "SAME_LOWER", "VALID"):
        return text.upper()
    per_dim = text.lower().split("x")
    out = []
    for part in per_dim:
        try:
            nums = tuple(int(v) for v in part.split(","))
        except ValueError:
            raise fail(
                "--padding",
                text,
                "P, lo,hi, per-dim values joined by 'x', or SAME / SAME_LOWER / VALID",
            ) from None
        if len(nums) not in (1, 2):
            raise fail("--padding", text, f"P or lo,hi for each dim, not {part!r}")
        out.append(nums[0] if len(nums) == 1 else nums)
    if len(out) == 1 and not isinstance(out[0], tuple):
        return out[0]
    if len(out) == 1:  # one lo,hi for every dim, spelt out as one (lo, hi) entry per dim
        out = out * ndim
    return [p if isinstance(p, tuple) else (p, p) for p in out]


def run(args) -> int:
    from gated_jax.shapes import explain_conv

    input_shape = ints_text("input", args.input)
    given = [name for name in _FROM_EXAMPLES if getattr(args, f"from_{name}") is not None]
    if len(given) > 1:
        raise fail(f"--from-{given[1]}", getattr(args, f"from_{given[1]}"), "used alone")
    if given:
        return _from_framework(given[0], getattr(args, f"from_{given[0]}"), input_shape)
    if args.kernel is None:
        raise fail(
            "--kernel", None, "given (K or KhxKw), or a layer with --from-torch / -keras / -onnx"
        )
    padding = _padding(args.padding, len(input_shape))
    if args.target is not None:
        padding = _padding_for_target(args, input_shape)
    text = explain_conv(
        input_shape,
        _one(ints_text("--kernel", args.kernel)),
        stride=_one(ints_text("--stride", args.stride)),
        padding=padding,
        dilation=_one(ints_text("--dilation", args.dilation)),
        input_dilation=_one(ints_text("--input-dilation", args.input_dilation)),
        channels=int_text("--channels", args.channels),
        filters=int_text("--filters", args.filters),
        feature_group_count=int_text("--groups", args.groups),
        transposed=args.transposed,
    )
    print(" x ".join(map(str, text.output_shape)))
    print()
    print(text)
    return 0


def _padding_for_target(args, input_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Print the padding for ``--target`` and how it was found; return it for the derivation."""
    from gated_jax.shapes import padding_for_output, transpose_padding_for_output

    n = len(input_shape)
    target = ints_text("--target", args.target)
    if len(target) == 1:
        target = target * n
    per_dim = [
        ints_text(f"--{a.replace('_', '-')}", getattr(args, a))
        for a in ("kernel", "stride", "dilation", "input_dilation")
    ]
    k, s, d, ld = ([v[0]] * n if len(v) == 1 else list(v) for v in per_dim)
    try:
        if args.transposed:
            pads = transpose_padding_for_output(input_shape, target, k, stride=s, dilation=d)
            how = "for lax.conv_transpose: the input gradient of the conv from T to H"
        else:
            kw = dict(stride=s, dilation=d, input_dilation=ld)
            pads = padding_for_output(input_shape, target, k, **kw)
            windows = padding_for_output(input_shape, target, k, all_paddings=True, **kw)
            how = "the smallest total padding, split as SAME splits it"
    except ValueError as e:  # the library names its own argument; here the user wrote --target
        msg = str(e)
        if msg.startswith("`output_size` "):
            raise fail("--target", args.target, msg.split(" must be ", 1)[1]) from None
        raise
    print("padding " + "x".join(f"{lo},{hi}" for lo, hi in pads) + f"  ({how})")
    for i in range(n):
        ke = (k[i] - 1) * d[i] + 1
        if args.transposed:
            lo, hi = pads[i]
            stretched = (input_shape[i] - 1) * s[i] + 1
            print(
                f"  dim {i}: ({input_shape[i]} - 1)*{s[i]} + 1 + lo + hi - {ke} + 1 = "
                f"{target[i]} needs lo + hi = {lo + hi}: ({lo}, {hi})"
                + (f" on the stretched input of {stretched}" if s[i] > 1 else "")
            )
        else:
            totals = sorted({lo + hi for lo, hi in windows[i]})
            print(
                f"  dim {i}: {target[i]} outputs need a total t with "
                f"({target[i]} - 1)*{s[i]} <= H' + t - {ke} < {target[i]}*{s[i]}: "
                f"t in {totals[0]}..{totals[-1]}; t = {sum(pads[i])} -> {pads[i]}"
            )
    print()
    return list(pads)


# ----------------------------------------------------------------------------------------------
# --from-torch / --from-keras / --from-onnx: a layer as written in its framework


def _parse_layer(option: str, text: str) -> tuple[str, list, dict]:
    """``Name(args, key=value)`` with literal arguments (no code is run)."""
    import ast

    form = "a layer call with literal arguments, e.g. " + repr(_FROM_EXAMPLES[option[7:]])
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise fail(option, text, form) from None
    if not isinstance(node, ast.Call):
        raise fail(option, text, form)
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except ValueError:
        raise fail(option, text, form) from None
    if name is None or len(kwargs) != len(node.keywords):
        raise fail(option, text, form)
    return name, args, kwargs


def _bind(option: str, text: str, params: tuple[str, ...], args: list, kwargs: dict) -> dict:
    if len(args) > len(params):
        raise fail(
            option, text, f"at most {len(params)} positional arguments ({', '.join(params)})"
        )
    bound = dict(zip(params, args, strict=False))
    for k, v in kwargs.items():
        if k not in params:
            raise fail(option, text, f"called with arguments among {', '.join(params)}, not {k!r}")
        if k in bound:
            raise fail(option, text, f"called with {k!r} once")
        bound[k] = v
    return bound


_TORCH_CONV = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
    "device",
    "dtype",
)
_TORCH_TCONV = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "output_padding",
    "groups",
    "bias",
    "dilation",
    "padding_mode",
    "device",
    "dtype",
)
_KERAS_CONV = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "groups",
    "activation",
    "use_bias",
)
_KERAS_TCONV = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "output_padding",
    "data_format",
    "dilation_rate",
    "activation",
    "use_bias",
)
_ONNX = (
    "kernel_shape",
    "auto_pad",
    "pads",
    "strides",
    "dilations",
    "group",
    "output_padding",
    "output_shape",
)


def _spec(n: int) -> str:
    sp = {1: "W", 2: "HW", 3: "DHW"}[n]
    return f"('N{sp}C', '{sp}IO', 'N{sp}C')"


def _check_torch_channels(option: str, text: str, b: dict) -> None:
    """Channels as PyTorch checks them when it builds the module: positive, divisible by groups."""
    groups = b.get("groups", 1)
    for key in ("in_channels", "out_channels", "groups"):
        positive_int(f"{option} {key}", b.get(key, 1))
    for key in ("in_channels", "out_channels"):
        if b[key] % groups:
            raise fail(
                option,
                text,
                f"{key} (={b[key]}) divisible by groups (={groups}), as PyTorch requires",
            )


def _from_torch(option, text, layer, digit, transposed, args, kw, input_shape) -> int:
    """``--from-torch``: a PyTorch ``Conv*d`` / ``ConvTranspose*d`` call, ported and printed."""
    import gated_jax as gj

    n = len(input_shape)
    if digit is None or layer[-1] != "d":
        raise fail(option, text, "a PyTorch Conv{1,2,3}d or ConvTranspose{1,2,3}d")
    b = _bind(option, text, _TORCH_TCONV if transposed else _TORCH_CONV, args, kw)
    for key in ("in_channels", "out_channels", "kernel_size"):
        if key not in b:
            raise fail(option, text, f"given {key} (PyTorch requires it)")
    _check_torch_channels(option, text, b)
    features = b["out_channels"]
    common = {k: b[k] for k in ("stride", "padding", "dilation", "groups") if k in b}
    if transposed:
        if b.get("padding_mode", "zeros") != "zeros":
            raise fail(option, text, "padding_mode='zeros' (PyTorch's only one for ConvTranspose)")
        port = gj.torch_conv_transpose(
            n, b["kernel_size"], output_padding=b.get("output_padding", 0), **common
        )
        return _print_torch_transpose(port, input_shape, features, b)
    port = gj.torch_conv(n, b["kernel_size"], padding_mode=b.get("padding_mode", "zeros"), **common)
    return _print_torch_conv(port, input_shape, features, b)


def _from_keras(option, text, layer, digit, transposed, args, kw, input_shape) -> int:
    """``--from-keras``: a Keras ``Conv*D`` / ``Conv*DTranspose`` call, ported and printed."""
    import gated_jax as gj

    n = len(input_shape)
    if digit is None or layer[-1] == "d":
        raise fail(option, text, "a Keras Conv{1,2,3}D or Conv{1,2,3}DTranspose")
    b = _bind(option, text, _KERAS_TCONV if transposed else _KERAS_CONV, args, kw)
    for key in ("filters", "kernel_size"):
        if key not in b:
            raise fail(option, text, f"given {key} (Keras requires it)")
    features = b["filters"]
    fmt = b.get("data_format") or "channels_last"
    if transposed:
        port = gj.keras_conv_transpose(
            n,
            b["kernel_size"],
            strides=b.get("strides", 1),
            padding=b.get("padding", "valid"),
            output_padding=b.get("output_padding"),
            data_format=fmt,
            dilation_rate=b.get("dilation_rate", 1),
        )
        kernel_line = "kernel = keras_kernel  # kernel_size + (filters, C_in), as Keras stores it"
        return _print_transpose(port, input_shape, features, kernel_line, "Keras")
    port = gj.keras_conv(
        n,
        b["kernel_size"],
        strides=b.get("strides", 1),
        padding=b.get("padding", "valid"),
        data_format=fmt,
        dilation_rate=b.get("dilation_rate", 1),
        groups=b.get("groups", 1),
    )
    kernel_line = "kernel = keras_kernel  # HWIO already"
    return _print_forward(port, input_shape, features, kernel_line, "Keras")


def _from_onnx(option, text, layer, digit, transposed, args, kw, input_shape) -> int:
    """``--from-onnx``: an ONNX ``Conv`` / ``ConvTranspose`` node, ported and printed."""
    import gated_jax as gj

    n = len(input_shape)
    features: object = "C_out"
    if digit is not None or layer not in ("Conv", "ConvTranspose"):
        raise fail(option, text, "an ONNX Conv or ConvTranspose node")
    if args:
        raise fail(option, text, "attributes given by name (kernel_shape=[...], ...)")
    b = _bind(option, text, _ONNX, args, kw)
    if "kernel_shape" not in b:
        raise fail(option, text, "given kernel_shape (the port needs the kernel size)")
    if not isinstance(b["kernel_shape"], (list, tuple)):
        raise fail(option, text, "kernel_shape given as a list of sizes, e.g. kernel_shape=[3, 3]")
    if len(b["kernel_shape"]) != n:
        raise fail("input", "x".join(map(str, input_shape)), f"{len(b['kernel_shape'])} sizes")
    kernel_line = "kernel = gated_jax.kernel_from_torch(W, transposed={})  # ONNX: PyTorch layouts"
    if transposed:
        port = gj.onnx_conv_transpose(**b)
        return _print_transpose(port, input_shape, features, kernel_line.format(True), "ONNX")
    for key in ("output_padding", "output_shape"):
        if key in b:
            raise fail(option, text, f"without {key} (a ConvTranspose attribute)")
    port = gj.onnx_conv(**b)
    return _print_forward(port, input_shape, features, kernel_line.format(False), "ONNX")


def _from_framework(name: str, text: str, input_shape: tuple[int, ...]) -> int:
    import re

    option = f"--from-{name}"
    layer, args, kw = _parse_layer(option, text)
    n = len(input_shape)
    dims = re.fullmatch(
        r"(Conv|ConvTranspose|Conv(\d)[dD]|Conv(\d)DTranspose|ConvTranspose(\d)d)", layer
    )
    if dims is None:
        raise fail(option, text, "a Conv / ConvTranspose layer of " + name)
    digit = next((g for g in dims.groups()[1:] if g), None)
    transposed = "Transpose" in layer
    if digit is not None and int(digit) != n:
        raise fail("input", "x".join(map(str, input_shape)), f"{digit} spatial sizes for {layer}")
    port = {"torch": _from_torch, "keras": _from_keras}.get(name, _from_onnx)
    return port(option, text, layer, digit, transposed, args, kw, input_shape)


def _shape_line(out) -> None:
    if min(out) < 1:
        raise fail("input", " x ".join(map(str, out)), "large enough for a non-empty output")
    print(" x ".join(map(str, out)))
    print()


def _print_forward(port, input_shape, features, kernel_line: str, who: str) -> int:
    n = len(input_shape)
    out = port.output_shape(input_shape)
    _shape_line(out)
    kw = port.lax_kwargs()
    print(f"{who} conv, input {input_shape} -> output {out}; in JAX (channels last):")
    print(kernel_line)
    print(
        f"y = lax.conv_general_dilated(x, kernel, window_strides={kw['window_strides']}, "
        f"padding={kw['padding']!r}, rhs_dilation={kw['rhs_dilation']}, "
        f"dimension_numbers={_spec(n)}, feature_group_count={kw['feature_group_count']})"
    )
    fk = port.flax_kwargs()
    print(
        f"layer = nn.Conv(features={features}, kernel_size={fk['kernel_size']}, "
        f"strides={fk['strides']}, padding={fk['padding']!r}, kernel_dilation="
        f"{fk['kernel_dilation']}, feature_group_count={fk['feature_group_count']})"
    )
    if isinstance(port.padding, str):
        print(f"# {port.padding!r} for this input: explicit {port.explicit_padding(input_shape)}")
    return 0


def _print_transpose(port, input_shape, features, kernel_line: str, who: str) -> int:
    n = len(input_shape)
    out = port.output_shape(input_shape)
    _shape_line(out)
    print(f"{who} transposed conv, input {input_shape} -> output {out}; in JAX (channels last):")
    if port.groups == 1:
        kw = port.lax_kwargs(input_shape)
        print(kernel_line)
        print(
            f"y = lax.conv_transpose(x, kernel, strides={kw['strides']}, padding={kw['padding']}, "
            f"rhs_dilation={kw['rhs_dilation']}, dimension_numbers={_spec(n)}, "
            "transpose_kernel=True)"
        )
        fk = port.flax_kwargs(input_shape)
        print(
            f"layer = nn.ConvTranspose(features={features}, kernel_size={fk['kernel_size']}, "
            f"strides={fk['strides']}, padding={fk['padding']}, kernel_dilation="
            f"{fk['kernel_dilation']}, transpose_kernel=True)"
        )
    else:
        _print_grouped(port.conv_kwargs(input_shape), n, port.groups, "W")
    print(
        f"# the padding is for input size {input_shape}: the window of the full result "
        f"(begin, size) per dim is {port.window(input_shape)}"
    )
    return 0


def _print_grouped(kw, n: int, groups: int, weight: str) -> None:
    print(
        "# lax.conv_transpose and Flax ConvTranspose have no feature groups: one "
        "conv_general_dilated on the stretched input"
    )
    print(
        f"kernel = gated_jax.kernel_from_torch({weight}, transposed=True, transpose_kernel=False, "
        f"groups={groups})"
    )
    print(
        f"y = lax.conv_general_dilated(x, kernel, window_strides={kw['window_strides']}, "
        f"padding={kw['padding']}, lhs_dilation={kw['lhs_dilation']}, "
        f"rhs_dilation={kw['rhs_dilation']}, dimension_numbers={_spec(n)}, "
        f"feature_group_count={groups})"
    )


def _print_torch_conv(port, input_shape, features, b) -> int:
    n = len(input_shape)
    pads = port.pre_padding or port.padding
    out = tuple(
        (h + lo + hi - d * (k - 1) - 1) // s + 1
        for h, (lo, hi), k, s, d in zip(
            input_shape,
            pads,
            _tuple(b["kernel_size"], n),
            port.window_strides,
            port.rhs_dilation,
            strict=True,
        )
    )
    _shape_line(out)
    print(f"PyTorch conv, input {input_shape} -> output {out}; in JAX (channels last):")
    print("kernel = gated_jax.kernel_from_torch(weight)  # (O, I/groups, *k) -> (*k, I/groups, O)")
    if port.pre_padding is not None:
        widths = ((0, 0), *port.pre_padding, (0, 0))
        print(
            f"x = jnp.pad(x, {widths}, mode={port.pad_mode!r})"
            f"  # padding_mode={b['padding_mode']!r}"
        )
    print(
        f"y = lax.conv_general_dilated(x, kernel, window_strides={port.window_strides}, "
        f"padding={port.padding}, rhs_dilation={port.rhs_dilation}, dimension_numbers={_spec(n)}, "
        f"feature_group_count={port.feature_group_count})"
    )
    flax_pad = port.padding
    print(
        f"layer = nn.Conv(features={features}, kernel_size={_tuple(b['kernel_size'], n)}, "
        f"strides={port.window_strides}, padding={flax_pad}, kernel_dilation={port.rhs_dilation}, "
        f"feature_group_count={port.feature_group_count})"
        + ("  # after the jnp.pad above" if port.pre_padding is not None else "")
    )
    return 0


def _print_torch_transpose(port, input_shape, features, b) -> int:
    n = len(input_shape)
    kw = port.conv_kwargs(input_shape)
    out = port.output_shape(input_shape)
    _shape_line(out)
    print(f"PyTorch transposed conv, input {input_shape} -> output {out}; in JAX (channels last):")
    if port.groups == 1:
        print("kernel = gated_jax.kernel_from_torch(weight, transposed=True)  # (*k, C_out, C_in)")
        print(
            f"y = lax.conv_transpose(x, kernel, strides={port.stride}, padding={kw['padding']}, "
            f"rhs_dilation={port.dilation}, dimension_numbers={_spec(n)}, transpose_kernel=True)"
        )
        print(
            f"layer = nn.ConvTranspose(features={features}, kernel_size={port.kernel_size}, "
            f"strides={port.stride}, padding={kw['padding']}, kernel_dilation={port.dilation}, "
            "transpose_kernel=True)"
        )
        print(
            "# PyTorch's padding p and output_padding op are the explicit padding "
            "(d(k-1) - p, d(k-1) - p + op) of the stretched input"
        )
    else:
        _print_grouped(kw, n, port.groups, "weight")
    return 0


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n
