r"""A per-layer summary of a model: shapes, parameters, FLOPs, bytes and receptive fields.

:func:`summary` takes a Flax linen module, an NNX module or a plain JAX function, traces it once
on the given inputs and returns a :class:`ModelSummary`: one :class:`LayerRow` per layer call
(linen: every leaf ``__call__`` seen by :func:`flax.linen.intercept_methods`, as
``Module.tabulate`` does; NNX: every leaf sub-module's ``__call__``, found by graph traversal;
a call with no array argument, such as a holder of parameters, is no layer; for both, every
``jax.lax.reduce_window`` call too, so Flax's ``max_pool`` / ``avg_pool`` / ``min_pool``
functions get rows ``pool_0``, ``pool_1``, ... of kind ``max_pool``, ``sum_pool``
(``avg_pool``'s sum, before its division) or ``min_pool``; a plain function: every
``conv_general_dilated``, ``dot_general`` and ``reduce_window*`` primitive of its
``jaxpr``, nested ``jit`` calls entered), with

* the output shape and the parameter count (linen: the layer's ``params`` collection; NNX:
  its :class:`flax.nnx.Param` leaves; a primitive: its floating operands that do not depend on
  the input ``inputs[wrt]``, i.e. closed-over weights and the other inputs);
* forward and backward FLOPs and bytes accessed, from XLA's cost analysis
  (``jax.jit(layer).lower(...).cost_analysis()``) of the layer call lowered alone on its
  recorded input shapes. Backward is the layer's vjp (gradients for its parameters and inputs
  from an output cotangent), with the forward work XLA keeps for it. XLA counts a
  multiply-add as 2 FLOPs and, for a padded convolution, only the kernel taps that land inside
  the input: a bias-free ``VALID`` conv costs exactly :math:`2 K C_\mathrm{in} C_\mathrm{out}
  \cdot \text{output size}`;
* for each convolution and pooling layer, the receptive field of its output with respect to
  the model input, per spatial dim: output position :math:`i` reads input positions in
  :math:`[\text{start} + i\,\text{jump},\ \text{start} + i\,\text{jump} + \text{size} - 1]`
  (the convention of :func:`gated_jax.shapes.receptive_field`). These come from the exact
  structural dependency of the layer's output on the model input
  (:func:`gated_jax.shapes.receptive_field_of`'s backward pass, one probe per output position
  along each spatial dim, all probes in one compiled pass), so they hold on any graph: skip
  connections, pooling, normalisation. The dependency of position :math:`i` is the span above
  clipped to the input, and equal to it where the span lies inside the input; so the jump is
  the most common step between neighbouring spans, ``start = min_i(lo_i - i jump)`` and
  ``size = max_i(hi_i - i jump) - start + 1``. Where every output position's span reaches
  past the input (a field wider than the input) the row says so in its warnings;
* the convolution arithmetic warnings of :func:`gated_jax.shapes.explain_conv` for each conv
  and pooling window: input rows no window covers, rows skipped by stride or dilation,
  asymmetric ``'SAME'`` padding.

Spatial dims: a conv's are its dimension numbers' spatial dims; the model input's are those of
the first conv whose input has the model input's rank (the first pooling window's non-trivial
dims if there is no conv).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import boolean, fail, index
from gated_jax.shapes.explain import explain_conv
from gated_jax.shapes.receptive import _backward

__all__ = ["LayerRow", "ModelSummary", "summary"]

_PRIMS: tuple[str, ...] = ("conv_general_dilated", "dot_general", "reduce_window_sum")
_PRIMS += ("reduce_window_max", "reduce_window_min", "reduce_window")
_SUBJAXPR = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr"}
_SUBJAXPR |= {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr"}


class LayerRow(NamedTuple):
    """One layer call of a :class:`ModelSummary` (see :func:`summary` for each field).

    ``rf_size``, ``rf_jump`` and ``rf_start`` have one entry per spatial dim for conv and
    pooling layers and are ``None`` for the others; ``warnings`` holds the conv arithmetic
    warnings of the layer's windows and any note on its receptive field.
    """

    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: float
    backward_flops: float
    bytes_accessed: float
    rf_size: tuple[int, ...] | None
    rf_jump: tuple[int, ...] | None
    rf_start: tuple[int, ...] | None
    warnings: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """The result of :func:`summary`: the rows, and the whole model's totals.

    ``params`` counts the model's own parameter tree (linen ``params``, NNX ``Param``; for a
    function, the sum of the rows' parameters); ``flops``, ``backward_flops`` and
    ``bytes_accessed`` are XLA's cost analysis of the whole model lowered at once (the
    backward pass is the vjp for the parameters and every input; the rows' sums can differ).
    ``str()`` is the table as text.
    """

    rows: tuple[LayerRow, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    params: int
    flops: float
    backward_flops: float
    bytes_accessed: float

    def __str__(self) -> str:
        return _table(self)


# ----------------------------------------------------------------------------------------------
# recording the calls


@dataclasses.dataclass
class _Call:
    path: str
    kind: str
    fn: Callable  # fn(*args): the call alone
    args: tuple  # pytree of ShapeDtypeStruct
    params: int
    out: Any  # the traced output (a tracer during the trace)


def _aval(x: Any) -> Any:
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _takes_arrays(args: tuple, kwargs: dict) -> bool:
    """Whether a call gets an array: calls without one (parameter holders) are no layers."""
    return any(_is_array(x) for x in jax.tree.leaves((args, kwargs)))


def _n_entries(tree: Any) -> int:
    return sum(int(np.prod(np.shape(x), dtype=np.int64)) for x in jax.tree.leaves(tree))


def _pure(call: Callable, args: tuple, kwargs: dict) -> tuple[Callable, tuple]:
    """``call(*args, **kwargs)`` as a function of its array leaves only (the rest static)."""
    leaves, tree = jax.tree.flatten((args, kwargs))
    is_arr = [_is_array(x) for x in leaves]
    static = [None if a else x for x, a in zip(leaves, is_arr, strict=True)]

    def fn(*arrays):
        it = iter(arrays)
        full = [next(it) if a else s for s, a in zip(static, is_arr, strict=True)]
        a, k = jax.tree.unflatten(tree, full)
        return call(*a, **k)

    return fn, tuple(_aval(x) for x, a in zip(leaves, is_arr, strict=True) if a)


class _Leaves:
    """A stack of the calls in progress: only calls with no recorded call inside are kept."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.stack: list[int] = []

    def run(self, make: Callable[[Any], _Call], run: Callable[[], Any]) -> Any:
        mark = len(self.calls)
        self.stack.append(mark)
        out = run()
        self.stack.pop()
        if len(self.calls) == mark:  # a leaf
            self.calls.append(make(out))
        return out


class _Pools:
    """While active, every ``jax.lax.reduce_window`` call (Flax's ``max_pool``, ``avg_pool``,
    ``min_pool``, ``pool``) is a call of its own: pooling functions get rows too."""

    def __init__(self, record: _Leaves) -> None:
        self.record, self.count = record, 0

    def __enter__(self) -> None:
        self.orig = orig = lax.reduce_window

        def reduce_window(operand, *args, **kwargs):
            rest = jax.tree.leaves((args, kwargs))
            if not _is_array(operand) or any(isinstance(x, jax.core.Tracer) for x in rest):
                return orig(operand, *args, **kwargs)  # a tuple of operands, traced init values
            k, self.count = self.count, self.count + 1
            op = args[1] if len(args) > 1 else kwargs.get("computation")
            kinds: dict[Any, str] = {lax.max: "max_pool", lax.min: "min_pool", lax.add: "sum_pool"}
            kind = kinds.get(op)

            def make(out):
                fn = lambda x: orig(x, *args, **kwargs)  # noqa: E731
                return _Call(f"pool_{k}", kind or "reduce_window", fn, (_aval(operand),), 0, out)

            return self.record.run(make, lambda: orig(operand, *args, **kwargs))

        lax.reduce_window = reduce_window

    def __exit__(self, *exc) -> None:
        lax.reduce_window = self.orig


def _linen_whole(model: Any) -> Callable:
    import flax.linen as nn

    def whole(variables, *inputs, record: _Leaves | None = None):
        if record is None:
            return model.apply(variables, *inputs)

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            if context.method_name != "__call__" or not mod.path or not _takes_arrays(args, kwargs):
                return next_fun(*args, **kwargs)
            unbound, vs = mod.unbind()

            def make(out):
                fn, avals = _pure(lambda v, *a, **k: unbound.apply(v, *a, **k), (vs, *args), kwargs)
                path = "/".join(map(str, mod.path))
                n = _n_entries(vs.get("params", {}))
                return _Call(path, type(mod).__name__, fn, avals, n, out)

            return record.run(make, lambda: next_fun(*args, **kwargs))

        with nn.intercept_methods(interceptor), _Pools(record):
            return model.apply(variables, *inputs)

    return whole


def _nnx_whole(graphdef: Any) -> Callable:
    from flax import nnx

    def whole(state, *inputs, record: _Leaves | None = None):
        model = nnx.merge(graphdef, state)
        if record is None:
            return model(*inputs)
        paths = {
            id(node): "/".join(map(str, p))
            for p, node in nnx.iter_graph(model)
            if p and isinstance(node, nnx.Module)
        }
        types = {type(node) for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)}
        origs = {t: (t.__call__, "__call__" in t.__dict__) for t in types if callable(t)}

        def wrap(orig):
            def call(self, *args, **kwargs):
                if id(self) not in paths or not _takes_arrays(args, kwargs):
                    return orig(self, *args, **kwargs)
                gd, st = nnx.split(self)

                def make(out):
                    fn, avals = _pure(
                        lambda s, *a, **k: nnx.merge(gd, s)(*a, **k), (st, *args), kwargs
                    )
                    n = _n_entries(nnx.state(self, nnx.Param))
                    return _Call(paths[id(self)], type(self).__name__, fn, avals, n, out)

                return record.run(make, lambda: orig(self, *args, **kwargs))

            return call

        try:
            for t, (orig, _) in origs.items():
                t.__call__ = wrap(orig)  # type: ignore[method-assign]
            with _Pools(record):
                return model(*inputs)
        finally:
            for t, (orig, own) in origs.items():
                if own:
                    t.__call__ = orig  # type: ignore[method-assign]
                else:
                    del t.__call__

    return whole


def _record_prim(prim, ops, indeps, params, record: _Leaves, counter) -> list[Any]:
    """One recorded primitive call: its row, its parameters the operands not from the input."""
    name = prim.name
    path = f"{name}_{counter[name]}"
    counter[name] += 1

    def fn(*a):
        return prim.bind(*a, **params)

    def make(out):
        n = sum(
            _n_entries(x)
            for x, d in zip(ops, indeps, strict=True)
            if not d and jnp.issubdtype(jnp.result_type(x), jnp.inexact)
        )
        return _Call(path, name, fn, tuple(_aval(x) for x in ops), n, out)

    res = record.run(make, lambda: fn(*ops))
    return list(res) if prim.multiple_results else [res]


def _interpret(jaxpr, consts, args, deps, record: _Leaves, counter) -> list[Any]:
    """Evaluate ``jaxpr`` (nested calls entered), recording the conv/dot/window primitives."""
    from jax.extend.core import Literal

    env: dict[Any, Any] = {}
    dep: dict[Any, bool] = {}
    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v], dep[v] = x, False
    for v, x, d in zip(jaxpr.invars, args, deps, strict=True):
        env[v], dep[v] = x, d

    def read(v):
        return (v.val, False) if isinstance(v, Literal) else (env[v], dep[v])

    for eqn in jaxpr.eqns:
        pairs = [read(v) for v in eqn.invars]
        invals, indeps = [p[0] for p in pairs], [p[1] for p in pairs]
        name = eqn.primitive.name
        params = eqn.primitive.get_bind_params(eqn.params)
        sub = eqn.params.get(_SUBJAXPR.get(name, ""), None)
        if sub is not None and hasattr(sub, "consts"):
            outs = _interpret(sub.jaxpr, sub.consts, invals, indeps, record, counter)
        elif name in _PRIMS:
            outs = _record_prim(eqn.primitive, invals, indeps, params, record, counter)
        else:
            res = eqn.primitive.bind(*invals, **params)
            outs = list(res) if eqn.primitive.multiple_results else [res]
        for v, x in zip(eqn.outvars, outs, strict=True):
            env[v], dep[v] = x, any(indeps)
    return [read(v)[0] for v in jaxpr.outvars]


def _function_whole(fn: Callable, wrt: int) -> Callable:
    def whole(state, *inputs, record: _Leaves | None = None):
        if record is None:
            return fn(*inputs)
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*inputs)
        flat, deps = [], []
        for i, x in enumerate(inputs):
            leaves = jax.tree.leaves(x)
            flat += leaves
            deps += [i == wrt] * len(leaves)
        counter: collections.Counter = collections.Counter()
        outs = _interpret(closed.jaxpr, closed.consts, flat, deps, record, counter)
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    return whole


# ----------------------------------------------------------------------------------------------
# costs, windows, receptive fields


def _cost(lowered) -> tuple[float, float]:
    c = lowered.cost_analysis()
    if isinstance(c, (list, tuple)):
        c = c[0] if c else {}
    c = c or {}
    return float(c.get("flops", 0.0)), float(c.get("bytes accessed", 0.0))


def _costs(fn: Callable, args: Sequence[Any]) -> tuple[float, float, float]:
    """(forward FLOPs, backward FLOPs, forward bytes) of ``fn(*args)`` lowered alone."""
    fwd = jax.jit(fn).lower(*args)
    flops, nbytes = _cost(fwd)
    leaves, tree = jax.tree.flatten(tuple(args))
    fl = [i for i, x in enumerate(leaves) if jnp.issubdtype(x.dtype, jnp.inexact)]
    outs = jax.tree.leaves(fwd.out_info)
    if not fl or not all(jnp.issubdtype(o.dtype, jnp.inexact) for o in outs):
        return flops, 0.0, nbytes

    def bwd(all_leaves, ct):
        def f(*fls):
            full = list(all_leaves)
            for i, v in zip(fl, fls, strict=True):
                full[i] = v
            return fn(*jax.tree.unflatten(tree, full))

        return jax.vjp(f, *[all_leaves[i] for i in fl])[1](ct)

    ct = jax.tree.map(lambda o: jax.ShapeDtypeStruct(o.shape, o.dtype), fwd.out_info)
    return flops, _cost(jax.jit(bwd).lower(leaves, ct))[0], nbytes


def _window_eqns(fn: Callable, args: Sequence[Any]) -> list[Any]:
    """The conv and reduce-window equations of ``fn(*args)``, nested calls entered."""
    found: list[Any] = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated" or eqn.primitive.name.startswith(
                "reduce_window"
            ):
                found.append(eqn)
            for p in eqn.params.values():
                sub = getattr(p, "jaxpr", p)
                if hasattr(sub, "eqns"):
                    walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def _window_dims(eqn) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(input spatial dims, output spatial dims, explain_conv arguments) of a window eqn."""
    p = eqn.params
    shape = eqn.invars[0].aval.shape
    if eqn.primitive.name == "conv_general_dilated":
        dn = p["dimension_numbers"]
        sp_in, sp_out = tuple(dn.lhs_spec[2:]), tuple(dn.out_spec[2:])
        kernel = [eqn.invars[1].aval.shape[d] for d in dn.rhs_spec[2:]]
        strides, pads = p["window_strides"], list(p["padding"])
        dil, ldil = p["rhs_dilation"], p["lhs_dilation"]
    else:
        wd, ws, pd = p["window_dimensions"], p["window_strides"], p["padding"]
        sp_in = tuple(d for d in range(len(shape)) if wd[d] != 1 or ws[d] != 1 or pd[d] != (0, 0))
        sp_out = sp_in
        kernel = [wd[d] for d in sp_in]
        strides, pads = [ws[d] for d in sp_in], [tuple(pd[d]) for d in sp_in]
        dil = [p["window_dilation"][d] for d in sp_in]
        ldil = [p["base_dilation"][d] for d in sp_in]
    spatial = [shape[d] for d in sp_in]
    padding: Any = [tuple(int(v) for v in pr) for pr in pads]
    if all(x == 1 for x in ldil) and any(lo != hi for lo, hi in padding):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True)]
        if [tuple(q) for q in lax.padtype_to_pads(spatial, eff, strides, "SAME")] == padding:
            padding = "SAME"
    kw = dict(input_shape=spatial, kernel_size=kernel, stride=tuple(strides), padding=padding)
    return sp_in, sp_out, kw | {"dilation": tuple(dil), "input_dilation": tuple(ldil)}


def _window_warnings(eqn) -> list[str]:
    """:func:`explain_conv`'s warnings for one conv / pooling window (none for a trivial one)."""
    kw = _window_dims(eqn)[2]
    if not kw["input_shape"]:
        return []
    try:
        return list(explain_conv(**kw).warnings)
    except ValueError:  # a window explain_conv does not model (e.g. lax's own edge cases)
        return []


def _fit(
    i: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_in: int, n_out: int, dim: int
) -> tuple[int, int, int, list[str]]:
    """(size, jump, start, notes) of one dim from the spans ``[lo, hi]`` of output positions i.

    A span's low end is trusted where it lies above the lowest row any output reads (it is not
    clipped by the input's start), its high end where it lies below the highest such row.
    """
    lo_ok, hi_ok = lo > lo.min(), hi < hi.max()
    pairs = np.array([], int)
    for e, ok in ((lo, lo_ok), (hi, hi_ok)):
        sel = ok[1:] & ok[:-1] & (i[1:] > i[:-1])
        pairs = np.concatenate([pairs, ((e[1:] - e[:-1]) // (i[1:] - i[:-1]))[sel]])
    notes = []
    if pairs.size:
        vals, counts = np.unique(pairs, return_counts=True)
        jump = int(vals[counts == counts.max()].max())
    else:
        jump = max(1, round(n_in / max(n_out, 1)))
        notes.append(
            f"dim {dim}: jump estimated as input/output size = {jump} (no two outputs "
            "read inside the input)"
        )
    start = int((lo - i * jump)[lo_ok].min() if lo_ok.any() else (lo - i * jump).min())
    end = int((hi - i * jump)[hi_ok].max() if hi_ok.any() else (hi - i * jump).max())
    if not lo_ok.any():
        notes.append(f"dim {dim}: every output reads from the input's first row: start <= {start}")
    if not hi_ok.any():
        notes.append(f"dim {dim}: every output reads up to the input's last row: end >= {end}")
    if not (lo_ok.any() and hi_ok.any()):
        notes.append(
            f"dim {dim}: the field is at least {end - start + 1} wide (wider than this input shows)"
        )
    return end - start + 1, jump, start, notes


def _receptive_fields(closed, args, n_model_out, wrt_leaf, calls, spatial) -> dict[int, Any]:
    """Per call index with spatial dims: (size, jump, start, notes), from one masked pass."""
    in_shape = closed.in_avals[wrt_leaf].shape
    sp_in, per_call = spatial
    probes: list[tuple[int, int, int]] = []  # (call, dim, position)
    for c, sp_out in per_call.items():
        shape = calls[c].out.shape
        probes += [(c, a, i) for a, d in enumerate(sp_out) for i in range(shape[d])]
    if not probes:
        return {}
    masks: dict[int, np.ndarray] = {
        c: np.zeros((len(probes), *calls[c].out.shape), bool) for c in per_call
    }
    for p, (c, a, i) in enumerate(probes):
        idx: list[Any] = [slice(None)] * len(calls[c].out.shape)
        for b, d in enumerate(per_call[c]):
            idx[d] = i if b == a else calls[c].out.shape[d] // 2
        masks[c][tuple([p, *idx])] = True
    rng = np.random.default_rng(0)

    @jax.jit
    def run(ms):
        def one(ms):
            outs = [None] * n_model_out + list(ms)
            got = _backward(closed.jaxpr, closed.consts, args, outs, rng)[wrt_leaf]
            return jnp.zeros(in_shape, bool) if got is None else got

        return jax.vmap(one)(ms)

    flat: list[Any] = []  # one mask per traced output leaf
    for c, call in enumerate(calls):
        flat += [masks.get(c)] if c in masks else [None] * len(jax.tree.leaves(call.out))
    deps = np.asarray(run(flat))
    spans: dict[tuple[int, int], list[tuple[int, int]]] = collections.defaultdict(list)
    for p, (c, a, _) in enumerate(probes):
        axes = tuple(d for d in range(len(in_shape)) if d != sp_in[a])
        row = deps[p].any(axis=axes)
        hit = np.flatnonzero(row)
        spans[c, a].append((hit[0], hit[-1]) if hit.size else (-1, -1))
    result = {}
    for c, sp_out in per_call.items():
        fits = []
        for a in range(len(sp_out)):
            s = np.array(spans[c, a])
            ok = s[:, 0] >= 0
            if ok.any():
                n_out = calls[c].out.shape[sp_out[a]]
                fits.append(
                    _fit(np.flatnonzero(ok), s[ok, 0], s[ok, 1], in_shape[sp_in[a]], n_out, a)
                )
            else:
                fits.append((0, 0, 0, [f"dim {a}: no output reads the input"]))
        notes = tuple(n for f in fits for n in f[3])
        result[c] = (
            tuple(f[0] for f in fits),
            tuple(f[1] for f in fits),
            tuple(f[2] for f in fits),
            notes,
        )
    return result


def _random_args(avals: Sequence[Any]) -> list[Any]:
    rng = np.random.default_rng(1)
    return [
        jnp.asarray(rng.uniform(0.5, 1.5, a.shape).astype(a.dtype))
        if jnp.issubdtype(a.dtype, jnp.inexact)
        else jnp.zeros(a.shape, a.dtype)
        for a in avals
    ]


# ----------------------------------------------------------------------------------------------
# the entry point


def _prepare(model_or_fn, inputs, variables, seed, wrt):
    """(whole(state, *inputs, record=None), state avals, total params)."""
    kind = _model_kind(model_or_fn)
    if kind == "linen":
        if variables is None:
            variables = jax.eval_shape(model_or_fn.init, jax.random.key(seed), *inputs)
        state = jax.tree.map(_aval, variables)
        return _linen_whole(model_or_fn), state, _n_entries(state.get("params", {}))
    if kind == "nnx":
        from flax import nnx

        graphdef, st = nnx.split(model_or_fn)
        n = _n_entries(nnx.state(model_or_fn, nnx.Param))
        return _nnx_whole(graphdef), jax.tree.map(_aval, st), n
    return _function_whole(model_or_fn, wrt), None, None


def _model_kind(m: Any) -> str:
    import sys

    linen = sys.modules.get("flax.linen")
    nnx = sys.modules.get("flax.nnx")
    if linen is not None and isinstance(m, linen.Module):
        return "linen"
    if nnx is not None and isinstance(m, nnx.Module):
        return "nnx"
    if callable(m) and not isinstance(m, type):
        return "function"
    raise fail("model_or_fn", m, "a Flax linen module, an NNX module or a JAX function")


def _spatial(calls: list[_Call], in_rank: int, windows: dict[int, list]) -> Any:
    """(model input spatial dims, {call: output spatial dims}) of the conv / pooling calls."""
    sp_in = None
    for c in sorted(windows):
        for eqn in windows[c]:
            if eqn.primitive.name == "conv_general_dilated" and eqn.invars[0].aval.ndim == in_rank:
                sp_in = sp_in or _window_dims(eqn)[0]
    for c in sorted(windows):
        for eqn in windows[c]:
            if eqn.invars[0].aval.ndim == in_rank:
                sp_in = sp_in or _window_dims(eqn)[0]
    per_call = {}
    for c, eqns in windows.items():
        out = calls[c].out
        if sp_in is None or not eqns or not _is_array(out) or out.ndim != in_rank:
            continue
        convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
        sp = _window_dims(convs[-1])[1] if convs else sp_in
        if len(sp) == len(sp_in):
            per_call[c] = sp
    return sp_in, per_call


def summary(
    model_or_fn: Any,
    *inputs: Any,
    variables: Any = None,
    seed: int = 0,
    wrt: int = 0,
    costs: bool = True,
) -> ModelSummary:
    r"""Per-layer shapes, parameters, FLOPs, bytes and receptive fields of a model.

    See the module docstring for how each column is computed. The receptive field of a conv or
    pooling layer's output is with respect to ``inputs[wrt]``: position :math:`i` of that
    output reads input positions in :math:`[\text{start} + i\,\text{jump},\ \text{start} +
    i\,\text{jump} + \text{size} - 1]` along each spatial dim (positions outside the input
    are padding), from the exact structural dependency, so it is right for skips and pooling
    too; on a plain stack it equals :func:`gated_jax.shapes.receptive_field`.

    Args:
      model_or_fn: a Flax linen module (called as ``model.apply(variables, *inputs)``), an NNX
        module (``model(*inputs)``) or a function of ``inputs``; the model runs as in
        inference (no ``rngs``, no mutable collections: ``Dropout`` deterministic,
        ``BatchNorm`` with running averages).
      inputs: arrays or :class:`jax.ShapeDtypeStruct` (only shapes and dtypes are used).
      variables: the linen module's variables; by default their shapes from ``model.init``.
      seed: the linen ``init`` key.
      wrt: which input the receptive fields (and, for a function, the parameter counts) refer
        to.
      costs: ``False`` skips XLA's cost analysis (two lowerings per row): FLOPs and bytes are
        then ``nan``, for a quicker table of shapes, parameters and receptive fields.

    Returns:
      :class:`ModelSummary`: ``rows`` (one :class:`LayerRow` per layer call), the totals, and
      the table as ``str()``.

    Raises:
      ValueError: `` `model_or_fn` (=...) must be ...`` for anything else; `` `inputs[i]` ``
      for an input that is not an array; `` `wrt` `` outside ``inputs``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jax import lax
      >>> w = jnp.ones((3, 3, 1, 4))
      >>> def f(x):
      ...     return lax.conv_general_dilated(x, w, (2, 2), "VALID",
      ...                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> s = summary(f, jnp.ones((1, 9, 9, 1)))
      >>> r = s.rows[0]
      >>> r.output_shape, r.params, r.flops, r.rf_size, r.rf_jump, r.rf_start
      ((1, 4, 4, 4), 36, 1152.0, (3, 3), (2, 2), (0, 0))

    References:
      Araujo, Norris and Sim, *Computing receptive fields of convolutional neural networks*,
      Distill 2019.
    """
    if not inputs:
        raise fail("inputs", inputs, "at least one input array")
    for i, x in enumerate(inputs):
        if not all(_is_array(leaf) for leaf in jax.tree.leaves(x)) or not jax.tree.leaves(x):
            raise fail(f"inputs[{i}]", x, "an array or a jax.ShapeDtypeStruct")
    wrt = index("wrt", wrt, len(inputs))
    costs = boolean("costs", costs)
    nan = float("nan")
    if not _is_array(inputs[wrt]):
        raise fail("wrt", wrt, "the index of an array input")
    inputs = tuple(jax.tree.map(_aval, x) for x in inputs)
    whole, state, n_params = _prepare(model_or_fn, inputs, variables, seed, wrt)
    record = _Leaves()

    def tapped(state, *xs):
        record.calls.clear()
        out = whole(state, *xs, record=record)
        return out, [c.out for c in record.calls]

    closed, (out_shape, _) = jax.make_jaxpr(tapped, return_shape=True)(state, *inputs)
    calls = list(record.calls)
    n_model_out = len(jax.tree.leaves(out_shape))
    windows = {c: _window_eqns(call.fn, call.args) for c, call in enumerate(calls)}
    windows = {c: w for c, w in windows.items() if w}
    in_rank = len(inputs[wrt].shape)
    spatial = _spatial(calls, in_rank, windows)
    wrt_leaf = len(jax.tree.leaves(state)) + sum(len(jax.tree.leaves(x)) for x in inputs[:wrt])
    args = _random_args(closed.in_avals)
    fields = _receptive_fields(closed, args, n_model_out, wrt_leaf, calls, spatial)
    rows = []
    for c, call in enumerate(calls):
        fwd, bwd, nbytes = _costs(call.fn, call.args) if costs else (nan, nan, nan)
        warns: list[str] = []
        for eqn in windows.get(c, []):
            warns += _window_warnings(eqn)
        size = jump = start = None
        if c in fields:
            size, jump, start, notes = fields[c]
            warns += list(notes)
        out = jax.tree.leaves(call.out)
        shape = tuple(out[0].shape) if out else ()
        rows.append(
            LayerRow(
                call.path,
                call.kind,
                shape,
                call.params,
                fwd,
                bwd,
                nbytes,
                size,
                jump,
                start,
                tuple(warns),
            )
        )
    tf, tb, tbytes = (
        _costs(lambda s, *xs: whole(s, *xs), (state, *inputs)) if costs else (nan, nan, nan)
    )
    total = n_params if n_params is not None else sum(r.params for r in rows)
    first = jax.tree.leaves(out_shape)
    return ModelSummary(
        rows=tuple(rows),
        input_shapes=tuple(tuple(leaf.shape) for x in inputs for leaf in jax.tree.leaves(x)),
        output_shape=tuple(first[0].shape) if first else (),
        params=total,
        flops=tf,
        backward_flops=tb,
        bytes_accessed=tbytes,
    )


# ----------------------------------------------------------------------------------------------
# the table


def _si(x: float) -> str:
    if x != x:  # nan: not computed
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:g}"


def _dims(t: tuple[int, ...] | None) -> str:
    return "" if t is None else "x".join(str(v) for v in t)


def _table(s: ModelSummary) -> str:
    head = (
        "layer",
        "kind",
        "output",
        "params",
        "FLOPs",
        "bwd FLOPs",
        "bytes",
        "RF size",
        "jump",
        "start",
    )
    body = [
        (
            r.path,
            r.kind,
            _dims(r.output_shape),
            f"{r.params:,}",
            _si(r.flops),
            _si(r.backward_flops),
            _si(r.bytes_accessed),
            _dims(r.rf_size),
            _dims(r.rf_jump),
            "" if r.rf_start is None else ",".join(str(v) for v in r.rf_start),
        )
        for r in s.rows
    ]
    total = (
        "total",
        "",
        _dims(s.output_shape),
        f"{s.params:,}",
        _si(s.flops),
        _si(s.backward_flops),
        _si(s.bytes_accessed),
        "",
        "",
        "",
    )
    widths = [max(len(str(row[j])) for row in [head, *body, total]) for j in range(len(head))]

    def line(row):
        return "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    inputs = ", ".join(_dims(sh) for sh in s.input_shapes)
    lines = [f"input {inputs}", line(head), rule, *map(line, body), rule, line(total)]
    warns = [f"  {r.path}: {w}" for r in s.rows for w in r.warnings]
    if warns:
        lines += ["", "warnings:", *warns]
    lines += [
        "",
        "FLOPs and bytes: XLA's cost analysis; RF: receptive field w.r.t. the input "
        "(output i reads [start + i*jump, start + i*jump + size - 1])",
    ]
    return "\n".join(lines)
