"""``gated-jax shape``: a convolution's output shape with its derivation and warnings.

``gated-jax shape 10x11 --kernel 3 --stride 2`` prints ``4 x 5`` (seed 1.1(a)) and the rule
with the numbers substituted. Per-dimension values are written ``AxB``; padding is an int, a
``lo,hi`` pair, one of those per dim (``1,2x0,0``), or ``SAME``/``SAME_LOWER``/``VALID``.

``--target 32`` (or ``32x32``) answers the inverse question: the padding that gives that
output size (``padding_for_output``; with ``--transposed``, the ``lax.conv_transpose`` padding
of ``transpose_padding_for_output``), with the window of totals that work and the derivation
of the result.
"""

from __future__ import annotations

from gated_jax._validate import fail

HELP = "output shape of a convolution, with the derivation (seed 1.1(a)/(b))"


def add_arguments(p) -> None:
    p.add_argument("input", help="spatial input size, e.g. 10x11 (H x W) or 32")
    p.add_argument("--kernel", "-k", required=True, help="kernel size: K or KhxKw")
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


def _ints(text: str, option: str) -> tuple[int, ...]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise fail(option, text, "an integer or integers joined by 'x', e.g. 3x3") from None
    return vals


def _one(vals: tuple[int, ...]):
    return vals[0] if len(vals) == 1 else vals


def _int(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise fail(option, text, "an integer") from None


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

    input_shape = _ints(args.input, "input")
    padding = _padding(args.padding, len(input_shape))
    if args.target is not None:
        padding = _padding_for_target(args, input_shape)
    text = explain_conv(
        input_shape,
        _one(_ints(args.kernel, "--kernel")),
        stride=_one(_ints(args.stride, "--stride")),
        padding=padding,
        dilation=_one(_ints(args.dilation, "--dilation")),
        input_dilation=_one(_ints(args.input_dilation, "--input-dilation")),
        channels=_int(args.channels, "--channels"),
        filters=_int(args.filters, "--filters"),
        feature_group_count=_int(args.groups, "--groups"),
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
    target = _ints(args.target, "--target")
    if len(target) == 1:
        target = target * n
    per_dim = [
        _ints(getattr(args, a), f"--{a.replace('_', '-')}")
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
