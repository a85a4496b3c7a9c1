"""The drawn cell is the cell: its graph, evaluated, equals gated_scan; the figure draws it all."""

import io

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from gated_jax.cell import gated_scan, init_gated_params  # noqa: E402
from gated_jax.diagrams import cell_graph, draw_unrolled_cell  # noqa: E402


def _evaluate(graph, params, xs, z0):
    """Run the drawn graph as a program: each edge applies its label to its source node.

    In NumPy float64 (an independent reference; eager JAX compiled a program per operation).
    """
    wmap = {"$W_x$": params.w_x, "$W_c$": params.w_c, "$W_z$": params.w_z}
    wmap = {k: np.asarray(v, np.float64) for k, v in wmap.items()}
    xs, z0 = np.asarray(xs, np.float64), np.asarray(z0, np.float64)
    val = {"z[0]": z0}
    T = xs.shape[0]
    for t in range(1, T + 1):
        val[f"x[{t}]"] = xs[t - 1]
    into: dict[str, list] = {}
    for src, dst, label, kind in graph.edges:
        into.setdefault(dst, []).append((src, label, kind))
    for t in range(1, T + 1):
        for name in (f"u[{t}]", f"c[{t}]", f"mix[{t}]", f"z[{t}]"):
            kind = graph.nodes[name][0]
            ins = into[name]
            if kind in ("candidate", "gate"):
                pre = sum(wmap[label] @ val[src] for src, label, _ in ins)
                val[name] = 1 / (1 + np.exp(-pre)) if kind == "gate" else pre
            elif kind == "mix":
                gate = [val[s] for s, _, k in ins if k == "gate"]
                assert len(gate) == 1
                c = gate[0]
                out = 0.0
                for src, label, k in ins:
                    if k == "carry":
                        assert label == rf"$\times\, c[{t}]$"
                        out = out + c * val[src]
                    elif k == "candidate":
                        assert label == rf"$\times\,(1-c[{t}])$"
                        out = out + (1 - c) * val[src]
                val[name] = out
            else:  # state: copies the mix
                ((src, label, k),) = ins
                assert graph.nodes[src][0] == "mix" and label == ""
                val[name] = val[src]
    return np.stack([val[f"z[{t}]"] for t in range(1, T + 1)])


@pytest.mark.parametrize("T", [1, 4])
def test_graph_evaluates_to_gated_scan(T):
    rng = np.random.default_rng(T)
    for n, m in [(3, 2), (2, 4)]:
        params = init_gated_params(jax.random.key(T + n), n, m, dtype=jnp.float64)
        xs = jnp.asarray(rng.normal(size=(T, n)))
        z0 = jnp.asarray(rng.normal(size=(m,)))
        got = _evaluate(cell_graph(T), params, xs, z0)
        want = gated_scan(params, xs, z0)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def _reachable(graph, src):
    seen, todo = {src}, [src]
    while todo:
        a = todo.pop()
        for s, d, _, _ in graph.edges:
            if s == a and d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_graph_reachability_is_the_jacobian_sparsity():
    """z[t] depends on x[s] iff the drawing has a path x[s] -> z[t] (checked by jacrev)."""
    T, n, m = 4, 3, 2
    graph = cell_graph(T)
    params = init_gated_params(jax.random.key(0), n, m, dtype=jnp.float64)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(T, n)))
    z0 = jnp.asarray(np.random.default_rng(1).normal(size=(m,)))
    jx, jz = jax.jacrev(gated_scan, argnums=(1, 2))(params, xs, z0)  # (T,m,T,n), (T,m,m)
    for s in range(1, T + 1):
        reach = _reachable(graph, f"x[{s}]")
        for t in range(1, T + 1):
            depends = bool(np.any(np.abs(jx[t - 1, :, s - 1, :]) > 0))
            assert depends == (f"z[{t}]" in reach), (s, t)
    reach0 = _reachable(graph, "z[0]")
    for t in range(1, T + 1):
        assert bool(np.any(np.abs(jz[t - 1]) > 0)) == (f"z[{t}]" in reach0)
    # W_z acts only through the gate: the one edge it labels enters a gate node.
    wz = [(s, d) for s, d, lab, _ in graph.edges if lab == "$W_z$"]
    assert len(wz) == T and all(graph.nodes[d][0] == "gate" for _, d in wz)


def test_graph_node_and_edge_counts():
    for T in (1, 3, 12):
        g = cell_graph(T)
        assert len(g.nodes) == 5 * T + 1
        assert len(g.edges) == 7 * T
        assert {d for _, d, _, _ in g.edges} | {"z[0]"} | {f"x[{t}]" for t in range(1, T + 1)} == (
            set(g.nodes)
        )


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_draw_returns_figure_with_every_node_and_edge():
    T = 3
    fig = draw_unrolled_cell(T, n=4, m=3)
    try:
        assert isinstance(fig, Figure)
        texts = _texts(fig)
        g = cell_graph(T)
        for _, _, label in g.nodes.values():
            assert label in texts
        for t in range(1, T + 1):
            assert f"$x[{t}]$" in texts and f"$z[{t}]$" in texts
        for w in ("$W_x$", "$W_c$", "$W_z$"):
            assert texts.count(w) == T
        arrows = [p for ax in fig.axes for p in ax.patches if isinstance(p, FancyArrowPatch)]
        assert len(arrows) == len(g.edges)
        joined = " ".join(texts)
        assert r"\mathbb{R}^{4}" in joined and r"\mathbb{R}^{3 \times 4}" in joined
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=50)
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        plt.close(fig)


def test_draw_into_given_axes():
    fig, (a, b) = plt.subplots(1, 2)
    try:
        out = draw_unrolled_cell(2, ax=b, equations=False)
        assert out is fig
        assert not a.texts and b.texts
        assert not any("mathbb" in t for t in _texts(fig))
    finally:
        plt.close(fig)


@pytest.mark.parametrize("bad", [0, -1, 13, 2.0, True, "3", None])
def test_bad_num_steps_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"`num_steps` \(="):
        cell_graph(bad)
    with pytest.raises(ValueError, match=r"`num_steps` \(="):
        draw_unrolled_cell(bad)


@pytest.mark.parametrize(("name", "bad"), [("n", 0), ("m", -2), ("n", 1.5), ("m", True)])
def test_bad_widths_name_the_argument(name, bad):
    with pytest.raises(ValueError, match=rf"`{name}` \(={bad!r}\)"):
        draw_unrolled_cell(2, **{name: bad})


def test_library_evaluator_matches_scan_and_checks_shape():
    from gated_jax.diagrams import evaluate_cell_graph

    T, n, m = 4, 3, 5
    params = init_gated_params(jax.random.key(7), n, m, dtype=jnp.float64)
    rng = np.random.default_rng(7)
    xs, z0 = jnp.asarray(rng.normal(size=(T, n))), jnp.asarray(rng.normal(size=(m,)))
    g = cell_graph(T)
    np.testing.assert_allclose(
        evaluate_cell_graph(g, params, xs, z0), gated_scan(params, xs, z0), rtol=1e-13, atol=1e-13
    )
    with pytest.raises(ValueError, match=r"`xs` \(=array of shape \(2, "):
        evaluate_cell_graph(g, params, xs[:2], z0)


def test_report_section_writes_figure_and_small_error(tmp_path):
    from gated_jax.lab import Context, diagram

    md = diagram.section(Context(out_dir=tmp_path, quick=True))
    assert (tmp_path / "gated_cell_unrolled.png").stat().st_size > 1000
    assert "![gated_cell_unrolled](gated_cell_unrolled.png)" in md
    assert "no diagram" in md
    err = float(md.split("max relative error of **")[1].split("**")[0])
    assert err < 1e-12
    assert diagram.TITLE.startswith("Seed 1.2(a)")
