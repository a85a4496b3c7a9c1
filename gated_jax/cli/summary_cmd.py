"""``gated-jax summary``: the per-layer table of a model importable as ``module:attr``."""

from __future__ import annotations

import sys

HELP = (
    "print a model's per-layer table: output shapes, parameters, forward/backward FLOPs, bytes, "
    "receptive fields and conv warnings"
)


def add_arguments(p) -> None:
    p.add_argument(
        "model",
        help=(
            "the model as module:attr (attr may be dotted), imported with the current directory "
            "on sys.path: a Flax linen module instance or class (built with no arguments), an "
            "NNX module instance or class (built with rngs=nnx.Rngs(SEED)), or a JAX function "
            "of the inputs"
        ),
    )
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="SHAPE",
        help="shape of one input, e.g. 1x28x28x1 (batch and channels included); repeat the "
        "option for each input, in order",
    )
    p.add_argument("--dtype", default="float32", help="dtype of the inputs (default float32)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the parameters' initialisation (default 0)"
    )
    p.add_argument(
        "--wrt",
        type=int,
        default=0,
        help="index of the input the receptive fields refer to (default 0, the first)",
    )
    p.add_argument(
        "--no-costs",
        action="store_true",
        help="skip XLA's cost analysis (FLOPs and bytes shown as -), for a quicker table",
    )


def _load(text: str):
    """The object named ``module:attr``, with the current directory importable."""
    import importlib
    import os

    from gated_jax._validate import fail

    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise fail("model", text, "module:attr, e.g. mypackage.models:cnn")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise fail("model", text, f"importable ({type(e).__name__}: {e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise fail("model", text, f"an attribute path of module {module!r}")
        obj = getattr(obj, part)
    return obj


def _build(obj, seed: int):
    """A linen / NNX module class built with its defaults; anything else as it is."""
    if isinstance(obj, type):
        import flax.linen as nn
        from flax import nnx

        if issubclass(obj, nn.Module):
            return obj()
        if issubclass(obj, nnx.Module):
            return obj(rngs=nnx.Rngs(seed))
    return obj


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    import gated_jax
    from gated_jax._validate import fail, float_dtype, index, ints_text, positive_int

    shapes = [ints_text("--input", s) for s in args.input]
    for text, shape in zip(args.input, shapes, strict=True):
        if min(shape) < 1:
            raise fail("--input", text, "positive sizes joined by 'x', e.g. 1x28x28x1")
    dtype = float_dtype("--dtype", args.dtype)
    wrt = index("--wrt", args.wrt, len(shapes))
    seed = positive_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    model = _build(_load(args.model), seed)
    inputs = [jax.ShapeDtypeStruct(s, jnp.dtype(dtype)) for s in shapes]
    print(gated_jax.summary(model, *inputs, seed=seed, wrt=wrt, costs=not args.no_costs))
    return 0
