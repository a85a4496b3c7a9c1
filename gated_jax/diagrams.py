r"""The gated cell unrolled in time, as a graph and as a drawing.

The cell

.. math::

    c[t] = \sigma(W_c x[t] + W_z z[t-1]), \qquad
    z[t] = c[t] \odot z[t-1] + (1 - c[t]) \odot W_x x[t]

is drawn as a computation graph. Per step ``t`` the graph has five nodes: the input ``x[t]``
(``R^n``), the candidate ``u[t] = W_x x[t]`` (``R^m``), the gate ``c[t] = sigmoid(...)``
(``R^m``), the convex mix, and the new state ``z[t]`` (``R^m``). Edges carry the weight that acts
on them: ``W_x`` and ``W_c`` (``m x n``) leave ``x[t]``, ``W_z`` (``m x m``) goes from ``z[t-1]``
into the gate, and the mix takes ``z[t-1]`` weighted by ``c[t]`` and ``u[t]`` weighted by
``1 - c[t]``.

:func:`cell_graph` is that structure as data (so tests can check it against the Jacobian sparsity
of :func:`gated_jax.gated_scan`); :func:`evaluate_cell_graph` runs it as a program;
:func:`draw_unrolled_cell` renders it with matplotlib.

References:
  K. Cho, B. van Merrienboer, C. Gulcehre, D. Bahdanau, F. Bougares, H. Schwenk, Y. Bengio,
  "Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine
  Translation", EMNLP 2014 (the update gate). With ``W_z = 0`` the cell is minGRU: L. Feng,
  F. Tung, M. O. Ahmed, Y. Bengio, H. Hajimirsadeghi, "Were RNNs All We Needed?", 2024.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gated_jax._validate import boolean, fail, positive_int

__all__ = ["CellGraph", "cell_graph", "draw_unrolled_cell", "evaluate_cell_graph"]

# Horizontal distance between consecutive states, node radius, and node heights.
_STEP = 4.6
_R = 0.42
_Y_STATE, _Y_GATE, _Y_CAND, _Y_INPUT = 4.4, 2.55, 2.25, 0.55

_COLOURS = {
    "carry": "#222222",
    "gate": "#d9730d",
    "candidate": "#1f6fb4",
}
_FILL = {
    "state": "#f1f1f1",
    "input": "#e6f0e0",
    "gate": "#fde9d6",
    "candidate": "#dceaf7",
    "mix": "#ffffff",
}


class CellGraph(NamedTuple):
    """The unrolled cell as a graph.

    Attributes:
      nodes: ``name -> (kind, (x, y), label)``; names are ``"x[t]"``, ``"u[t]"``, ``"c[t]"``,
        ``"mix[t]"`` for ``t = 1..T`` and ``"z[t]"`` for ``t = 0..T``; kinds are ``"input"``,
        ``"candidate"``, ``"gate"``, ``"mix"``, ``"state"``.
      edges: ``(src, dst, label, kind)`` with kind ``"carry"``, ``"gate"`` or ``"candidate"``;
        the label is the weight or factor acting on the edge (Matplotlib mathtext).
    """

    nodes: dict[str, tuple[str, tuple[float, float], str]]
    edges: list[tuple[str, str, str, str]]


def cell_graph(num_steps: int = 3) -> CellGraph:
    """The gated cell unrolled over ``num_steps`` steps, as nodes with positions and edges.

    Args:
      num_steps: number of time steps ``T`` drawn, an int in ``[1, 12]``.

    Returns:
      A :class:`CellGraph`. ``z[t]`` is reachable from ``x[s]`` exactly when ``s <= t``, and
      from ``z[s]`` exactly when ``s <= t``: the dependency structure of the recurrence.

    Raises:
      ValueError: if ``num_steps`` is not an int in ``[1, 12]``.

    Examples:
      >>> from gated_jax.diagrams import cell_graph
      >>> g = cell_graph(2)
      >>> len(g.nodes), len(g.edges)  # 5 nodes and 7 edges per step, plus z[0]
      (11, 14)
      >>> [e for e in g.edges if e[1] == "c[1]"]  # the gate reads x[1] and z[0]
      [('x[1]', 'c[1]', '$W_c$', 'gate'), ('z[0]', 'c[1]', '$W_z$', 'gate')]
    """
    T = positive_int("num_steps", num_steps, maximum=12)
    nodes: dict[str, tuple[str, tuple[float, float], str]] = {
        "z[0]": ("state", (0.0, _Y_STATE), r"$z[0]$")
    }
    edges: list[tuple[str, str, str, str]] = []
    for t in range(1, T + 1):
        x0 = _STEP * (t - 1)
        nodes[f"x[{t}]"] = ("input", (x0 + 2.0, _Y_INPUT), rf"$x[{t}]$")
        nodes[f"c[{t}]"] = ("gate", (x0 + 1.35, _Y_GATE), r"$\sigma$")
        nodes[f"u[{t}]"] = ("candidate", (x0 + 3.05, _Y_CAND), rf"$u[{t}]$")
        nodes[f"mix[{t}]"] = ("mix", (x0 + 3.05, _Y_STATE), r"$+$")
        nodes[f"z[{t}]"] = ("state", (x0 + _STEP, _Y_STATE), rf"$z[{t}]$")
        edges += [
            (f"x[{t}]", f"c[{t}]", r"$W_c$", "gate"),
            (f"z[{t - 1}]", f"c[{t}]", r"$W_z$", "gate"),
            (f"x[{t}]", f"u[{t}]", r"$W_x$", "candidate"),
            (f"c[{t}]", f"mix[{t}]", rf"$c[{t}]$", "gate"),
            (f"z[{t - 1}]", f"mix[{t}]", rf"$\times\, c[{t}]$", "carry"),
            (f"u[{t}]", f"mix[{t}]", rf"$\times\,(1-c[{t}])$", "candidate"),
            (f"mix[{t}]", f"z[{t}]", "", "carry"),
        ]
    return CellGraph(nodes, edges)


def evaluate_cell_graph(graph: CellGraph, params, xs, z0):
    """Run the drawn graph as a program: the states ``z[1..T]`` it denotes, shape ``(T, m)``.

    Each edge applies its label to its source: ``W_x``/``W_c``/``W_z`` are matrix products, a
    gate node sums its inputs and applies the sigmoid, a candidate node sums them, a mix node adds
    its carry input times ``c[t]`` and its candidate input times ``1 - c[t]``. Equal to
    :func:`gated_jax.gated_scan` without biases (this is how the drawing is checked).

    Args:
      graph: from :func:`cell_graph`.
      params: a :class:`gated_jax.GatedParams` with dense ``w_z`` (biases ignored).
      xs: inputs ``(T, n)``, ``T`` the graph's number of steps.
      z0: initial state ``(m,)``.

    Returns:
      A NumPy array ``(T, m)``: the states ``z[1..T]``.

    Raises:
      ValueError: if ``xs`` is not of shape ``(T, n)``.
    """
    from gated_jax.cell import step

    weights = {"$W_x$": params.w_x, "$W_c$": params.w_c, "$W_z$": params.w_z}
    steps = sum(1 for k in graph.nodes if k.startswith("x["))
    if len(np.shape(xs)) != 2 or np.shape(xs)[0] != steps:
        raise fail("xs", xs, f"of shape ({steps}, n): one input per drawn step")
    into: dict[str, list[tuple[str, str, str]]] = {}
    for src, dst, label, kind in graph.edges:
        into.setdefault(dst, []).append((src, label, kind))
    val = {"z[0]": z0} | {f"x[{t}]": xs[t - 1] for t in range(1, steps + 1)}
    for t in range(1, steps + 1):
        for name in (f"u[{t}]", f"c[{t}]", f"mix[{t}]", f"z[{t}]"):
            kind, ins = graph.nodes[name][0], into[name]
            if kind in ("gate", "candidate"):
                pre = sum(weights[label] @ val[src] for src, label, _ in ins)
                val[name] = step.gate_activation(pre) if kind == "gate" else pre
            elif kind == "mix":
                # the cell's own convex mix, fed by whichever sources the drawing wires in
                c = next(val[src] for src, _, k in ins if k == "gate")
                carry = [val[src] for src, _, k in ins if k == "carry"]
                cand = [val[src] for src, _, k in ins if k == "candidate"]
                val[name] = step.mix(c, sum(carry), sum(cand))
            else:
                val[name] = val[ins[0][0]]
    return np.stack([np.asarray(val[f"z[{t}]"]) for t in range(1, steps + 1)])


def _shapes_text(n: int | None, m: int | None) -> str:
    ns = "n" if n is None else str(n)
    ms = "m" if m is None else str(m)
    return (
        rf"$x[t] \in \mathbb{{R}}^{{{ns}}}$;  $z[t],\ c[t],\ u[t] \in \mathbb{{R}}^{{{ms}}}$;  "
        rf"$W_x, W_c \in \mathbb{{R}}^{{{ms} \times {ns}}}$;  "
        rf"$W_z \in \mathbb{{R}}^{{{ms} \times {ms}}}$"
    )


def draw_unrolled_cell(
    num_steps: int = 3,
    *,
    n: int | None = None,
    m: int | None = None,
    equations: bool = True,
    ax=None,
):
    r"""Draw the gated cell unrolled over ``num_steps`` time steps; return the Figure.

    Each step ``t`` reads ``x[t]`` and ``z[t-1]`` and writes ``z[t]``:

    * gate path (orange): ``c[t] = sigmoid(W_c x[t] + W_z z[t-1])``, the ``sigma`` node;
    * candidate path (blue): ``u[t] = W_x x[t]``;
    * carry (black): the convex mix ``z[t] = c[t] * z[t-1] + (1 - c[t]) * u[t]`` (the ``+``
      node), elementwise, so each unit of ``z[t]`` lies between the same unit of ``z[t-1]`` and
      of ``u[t]``.

    The recurrent weight ``W_z`` enters only through the gate: ``z[t-1]`` reaches ``z[t]``
    directly, scaled by ``c[t]``, which is what makes ``J[t] = dz[t]/dz[t-1]`` equal to
    ``diag(c[t]) + diag((z[t-1] - u[t]) c[t] (1 - c[t])) W_z``.

    Args:
      num_steps: time steps drawn, an int in ``[1, 12]``.
      n, m: input and state widths written into the shape legend (``None``: the symbols).
      equations: write the two equations and the shapes under the drawing.
      ax: a matplotlib ``Axes`` to draw into; ``None`` makes a new figure.

    Returns:
      The ``matplotlib.figure.Figure`` holding the drawing.

    Raises:
      ValueError: for ``num_steps`` outside ``[1, 12]`` or non-positive ``n``/``m``.
    """
    graph = cell_graph(num_steps)
    n, m = positive_int("n", n, allow_none=True), positive_int("m", m, allow_none=True)
    equations = boolean("equations", equations)
    import matplotlib.pyplot as plt

    T = len([k for k in graph.nodes if k.startswith("x[")])
    width = _STEP * T
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.0 + 2.3 * T, 4.6 if equations else 3.6))
    else:
        fig = ax.figure
    _draw_nodes(ax, graph)
    _draw_edges(ax, graph)
    _draw_steps(ax, T, width)
    bottom = _draw_equations(ax, width, n, m) if equations else -0.6
    ax.set_xlim(-0.8, width + 1.9)
    ax.set_ylim(bottom, _Y_STATE + 0.9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"The gated cell unrolled over {T} time step{'s' if T > 1 else ''}", fontsize=11)
    return fig


def _radius(graph: CellGraph, node: str) -> float:
    """Drawn radius of ``node``: the mix node is smaller than the others."""
    return _R * (0.62 if graph.nodes[node][0] == "mix" else 1.0)


def _draw_nodes(ax, graph: CellGraph) -> None:
    """One filled circle per node, its label at the centre."""
    from matplotlib.patches import Circle

    for kind, (x, y), label in graph.nodes.values():
        r = _R * (0.62 if kind == "mix" else 1.0)
        ax.add_patch(
            Circle((x, y), r, facecolor=_FILL[kind], edgecolor="#444444", lw=1.2, zorder=3)
        )
        ax.text(
            x, y, label, ha="center", va="center", fontsize=11 if kind != "mix" else 12, zorder=4
        )


def _label_offset(graph: CellGraph, dst: str, kind: str, ux: float, uy: float):
    """Offset ``(dx, dy, ha)`` of an edge label from the edge's midpoint.

    Labels sit beside the edge, on its left when walking along the unit direction ``(ux, uy)``;
    carry labels sit above the edge, and the candidate's label into the mix to its right.
    """
    off = 0.28
    ox, oy, ha = -uy * off, ux * off, "center"
    if kind == "carry":
        ox, oy = 0.0, 0.3
    elif graph.nodes[dst][0] == "mix" and kind == "candidate":
        ox, oy, ha = 0.12, 0.0, "left"
    return ox, oy, ha


def _draw_edges(ax, graph: CellGraph) -> None:
    """One arrow per edge, from circle boundary to circle boundary, with its weight label."""
    from matplotlib.patches import FancyArrowPatch

    for src, dst, label, kind in graph.edges:
        (x0, y0), (x1, y1) = graph.nodes[src][1], graph.nodes[dst][1]
        d = np.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / d, (y1 - y0) / d
        a = (x0 + ux * _radius(graph, src), y0 + uy * _radius(graph, src))
        b = (x1 - ux * _radius(graph, dst), y1 - uy * _radius(graph, dst))
        ax.add_patch(
            FancyArrowPatch(
                a, b, arrowstyle="-|>", mutation_scale=12, lw=1.4, color=_COLOURS[kind], zorder=2
            )
        )
        if not label:
            continue
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        ox, oy, ha = _label_offset(graph, dst, kind, ux, uy)
        ax.text(
            mx + ox,
            my + oy,
            label,
            ha=ha,
            va="center",
            fontsize=9.5,
            color=_COLOURS[kind],
            zorder=4,
            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85),
        )


def _draw_steps(ax, T: int, width: float) -> None:
    """A shaded band and a caption per time step, and the dashed carry out of the last one."""
    for t in range(1, T + 1):
        xc = _STEP * (t - 0.5)
        ax.axvspan(_STEP * (t - 1) + 0.75, _STEP * t - 0.75, color="#f7f7f7", zorder=0)
        ax.text(
            xc, _Y_INPUT - 0.75, f"step t = {t}", ha="center", va="top", fontsize=9, color="#555555"
        )
    ax.annotate(
        "",
        xy=(width + 1.2, _Y_STATE),
        xytext=(width + _R, _Y_STATE),
        arrowprops=dict(arrowstyle="-|>", color=_COLOURS["carry"], lw=1.4, ls="--"),
    )
    ax.text(width + 1.3, _Y_STATE, r"$\cdots$", ha="left", va="center", fontsize=12)


def _draw_equations(ax, width: float, n: int | None, m: int | None) -> float:
    """The two equations and the shape legend under the drawing; returns the new bottom."""
    ax.text(
        width / 2,
        -0.75,
        r"$c[t] = \sigma(W_c\,x[t] + W_z\,z[t-1])$      "
        r"$z[t] = c[t] \odot z[t-1] + (1 - c[t]) \odot u[t],\quad u[t] = W_x\,x[t]$",
        ha="center",
        va="top",
        fontsize=10.5,
    )
    ax.text(
        width / 2,
        -1.45,
        _shapes_text(n, m),
        ha="center",
        va="top",
        fontsize=9.5,
        color="#333333",
    )
    return -2.0
