"""``gated-jax shape``: a convolution's output shape with its derivation and warnings.

``gated-jax shape 10x11 --kernel 3 --stride 2`` prints ``4 x 5`` (seed 1.1(a)) and the rule
with the numbers substituted. Per-dimension values are written ``AxB``; padding is an int, a
``lo,hi`` pair, one of those per dim (``1,2x0,0``), or ``SAME``/``SAME_LOWER``/``VALID``.
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
    text = explain_conv(
        input_shape,
        _one(_ints(args.kernel, "--kernel")),
        stride=_one(_ints(args.stride, "--stride")),
        padding=_padding(args.padding, len(input_shape)),
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
