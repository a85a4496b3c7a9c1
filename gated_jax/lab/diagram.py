"""The gated cell drawn unrolled in time: the capability's verify rows, report section and
benchmark.

Report section (``section``): seed 1.2(a), the gated cell drawn unrolled in time (the seed has
no diagram).
"""

from __future__ import annotations

from gated_jax.lab._report import render

# --- from report/diagram.py ---------------------------------------------------------------

TITLE = "Seed 1.2(a): the gated cell unrolled in time"


SECTION = "\n".join(
    [
        "The question asks for a diagram of the cell. **The homework's answer gives only the "
        "two equations; it has no diagram.** Here it is, drawn by "
        "`gated_jax.diagrams.draw_unrolled_cell` from the graph `cell_graph` "
        "({nodes} nodes, {edges} edges for {steps} steps). The drawing "
        "is checked: run as a program (`evaluate_cell_graph`, each edge applying its label) "
        "on random float64 inputs (n={n}, m={m}) it gives `gated_scan`'s states to a max "
        "relative error of **{err:.1e}**; the test suite also checks that `z[t]` depends "
        "on `x[s]` (by `jax.jacrev`) exactly where the drawing has a path.",
        "",
        "{link}",
        "",
        "$$c[t] = \\sigma(W_c\\,x[t] + W_z\\,z[t-1]), \\qquad "
        "z[t] = c[t] \\odot z[t-1] + (1 - c[t]) \\odot W_x\\,x[t]$$",
        "",
        "- orange, the gate: `W_c` from the input and `W_z` from the previous state meet in "
        "the sigmoid; `c[t]` is in `(0, 1)^m`, the dimension of the state (seed 1.2(b): "
        "`c[t]` is in `R^m`, as the homework says).",
        "- blue, the candidate `u[t] = W_x x[t]`: no nonlinearity, no recurrence.",
        "- black, the carry: `z[t]` is an elementwise convex mix of `z[t-1]` and `u[t]`, so "
        "each unit of `z[t]` lies between the same unit of `z[t-1]` and of `u[t]`.",
        "",
        "`W_z` reaches `z[t]` only through the gate, while `z[t-1]` also reaches it directly "
        "(scaled by `c[t]`). That is why the one-step Jacobian has two terms, "
        "`J[t] = diag(c[t]) + diag((z[t-1] - u[t]) * c[t] * (1 - c[t])) W_z`: the direct "
        "path gives `diag(c[t])`, the path through the gate the `W_z` term.",
        "",
        "Interactive version, with the dimensions and the BPTT check: "
        "`notebooks/03_gated_recurrence.ipynb`.",
    ]
)


def section(ctx) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gated_jax.cell import gated_scan, init_gated_params
    from gated_jax.diagrams import cell_graph, draw_unrolled_cell, evaluate_cell_graph
    from gated_jax.testing import max_rel_error

    steps, n, m = 3, 4, 3
    fig = draw_unrolled_cell(steps)
    link = ctx.save_figure(fig, "gated_cell_unrolled")
    graph = cell_graph(steps)
    with jax.enable_x64(True):
        params = init_gated_params(jax.random.key(ctx.seed), n, m, dtype=jnp.float64)
        rng = np.random.default_rng(ctx.seed)
        xs, z0 = jnp.asarray(rng.normal(size=(steps, n))), jnp.asarray(rng.normal(size=(m,)))
        err = max_rel_error(evaluate_cell_graph(graph, params, xs, z0), gated_scan(params, xs, z0))
    data = dict(nodes=len(graph.nodes), edges=len(graph.edges), steps=steps, n=n, m=m)
    return render(SECTION, data | {"err": err, "link": link})


checks = None  # the drawn graph is checked by tests/test_diagrams.py and the section itself
bench = None
