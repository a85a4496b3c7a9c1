"""Gradient-flow experiments: worst-case search, learning, sharding, plots and the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gated_jax.cli import main
from gated_jax.experiments import (
    FlowConfig,
    adding_problem,
    flow_sweep,
    learning_experiment,
    map_configs,
    worst_case_lengths,
    worst_case_search,
)
from gated_jax.experiments.worst_case import log_jacobian_norm

# ---- worst case -----------------------------------------------------------------------------


def test_log_jacobian_norm_equals_log_frobenius_of_jacrev():
    rng = np.random.default_rng(1)
    n, m, T = 2, 3, 30
    w_x, w_c = (jnp.asarray(rng.standard_normal((m, n))) for _ in range(2))
    w_z = jnp.asarray(3 * rng.standard_normal((m, m)))
    xs = jnp.asarray(2 * rng.standard_normal((T, n)))
    z0 = jnp.asarray(rng.standard_normal(m))

    def plain(z):
        for t in range(T):
            c = jax.nn.sigmoid(w_c @ xs[t] + w_z @ z)
            z = c * z + (1 - c) * (w_x @ xs[t])
        return z

    ref = np.log(np.linalg.norm(np.asarray(jax.jacrev(plain)(z0))))
    assert float(log_jacobian_norm(w_x, w_c, w_z, xs, z0)) == pytest.approx(ref, rel=1e-10)


@pytest.fixture(scope="module")
def searched():
    return worst_case_lengths((4, 8), n=2, m=3, steps=25, restarts=2, wz_norm=1.5)


def test_worst_case_search_respects_bounds_and_improves(searched):
    for r in searched:
        assert np.linalg.norm(r.params.w_z, 2) <= 1.5 * (1 + 1e-9)
        assert np.linalg.norm(r.params.w_x, 2) <= 1.0 * (1 + 1e-9)
        assert np.linalg.norm(r.params.w_c, 2) <= 1.0 * (1 + 1e-9)
        assert np.abs(r.xs).max() <= 3.0
        assert r.history.shape == (25, 2)
        assert r.jacrev_rel_error < 1e-10  # exact spectral norm agrees with jax.jacrev
        assert r.rate <= r.bound_rate + 1e-12 <= r.a_priori_rate + 1e-12
        assert r.norm == pytest.approx(np.exp(r.rate * r.length))
    assert searched[0].history[-1].max() > searched[0].history[0].max()  # the ascent climbs


def test_worst_case_returns_the_best_iterate_not_the_last(searched):
    """Adam's ascent is not monotone: each restart keeps the best point it visited."""
    for r in searched:
        final = r.final
        frob = [
            float(log_jacobian_norm(*(final[k][i] for k in ("w_x", "w_c", "w_z", "xs")), z0))
            / r.length
            for i in range(final["xs"].shape[0])
            for z0 in [jnp.zeros(final["w_z"].shape[-1])]
        ]
        # every restart's kept point is at least as good as every step it took
        np.testing.assert_array_less(r.history.max(axis=0) - 1e-12, np.array(frob))
        # and the reported spectral rate belongs to the best of them
        assert r.rate * r.length >= max(frob) * r.length - np.log(np.sqrt(final["w_z"].shape[-1]))


def test_worst_case_continuation_warm_starts_longer_lengths(searched):
    assert [r.length for r in searched] == [4, 8]
    assert searched[1].final["xs"].shape == (2, 8, 2)
    # the 8-step search starts from the 4-step result, so its objective starts high
    assert searched[1].history[0].max() > 0.5 * searched[0].history[0].max()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(length=0), "length"),
        (dict(wz_norm=-1.0), "wz_norm"),
        (dict(restarts=0), "restarts"),
        (dict(seed=-1), "`seed`"),
        (dict(seed=1.5), "`seed`"),
        (dict(init={"xs": np.zeros((2, 4, 2))}), "`init`"),
        (dict(init={k: np.zeros((2, 3, 2)) for k in ("w_x", "w_c", "w_z", "xs")}), "`init`"),
        (
            dict(
                restarts=5,
                init={
                    "w_x": np.zeros((2, 4, 2)),
                    "w_c": np.zeros((2, 4, 2)),
                    "w_z": np.zeros((2, 4, 4)),
                    "xs": np.zeros((2, 3, 2)),
                },
            ),
            "`restarts`",
        ),
    ],
)
def test_worst_case_search_rejects_bad_arguments(kwargs, match):
    kwargs = {"length": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        worst_case_search(kwargs.pop("length"), **kwargs)


@pytest.mark.parametrize("lengths", [(4.7,), (), 8, (0, 4)])
def test_worst_case_lengths_rejects_bad_lengths(lengths):
    with pytest.raises(ValueError, match="`lengths`"):
        worst_case_lengths(lengths, steps=2, restarts=1)


# ---- learning -------------------------------------------------------------------------------


def test_adding_problem_batches():
    xs, ys = adding_problem(np.random.default_rng(0), 200, 9)
    assert xs.shape == (200, 9, 2) and ys.shape == (200,)
    marks = xs[..., 1]
    assert np.all(marks.sum(1) == 2)
    assert np.all(marks[:, :4].sum(1) == 1) and np.all(marks[:, 4:].sum(1) == 1)
    np.testing.assert_allclose((xs[..., 0] * marks).sum(1), ys)
    with pytest.raises(ValueError, match="length"):
        adding_problem(np.random.default_rng(0), 2, 1)
    for batch, length, name in ((-1, 5, "`batch`"), (2, 5.5, "`length`"), (2, "10", "`length`")):
        with pytest.raises(ValueError, match=name):
            adding_problem(np.random.default_rng(0), batch, length)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=float("inf")), "`learning_rate`"),
        (dict(learning_rate=True), "`learning_rate`"),
        (dict(dtype=jnp.int32), "`dtype`"),
        (dict(cells=()), "`cells`"),
        (dict(lengths=10), "`lengths`"),
        (dict(seeds=()), "`seeds`"),
    ],
)
def test_learning_experiment_names_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        learning_experiment(**{"lengths": (4,), "steps": 2, "progress": False, **kwargs})


def test_learning_experiment_float32_ignores_the_global_x64_flag():
    kw = dict(lengths=(4,), seeds=(0,), hidden=4, batch=8, steps=15, progress=False)
    kw.update(cells=("tanh",), learning_rate=np.float32(2e-2))  # NumPy floats are accepted
    with jax.enable_x64(True):
        on = learning_experiment(**kw)
    with jax.enable_x64(False):
        off = learning_experiment(**kw)
    np.testing.assert_array_equal(on.curves[("tanh", 4)], off.curves[("tanh", 4)])


@pytest.fixture(scope="module")
def learned():
    return learning_experiment(
        lengths=(4,),
        seeds=(0, 1),
        hidden=6,
        batch=32,
        steps=60,
        learning_rate=2e-2,
        progress=False,
    )


def test_learning_experiment_trains_and_saves(learned, tmp_path):
    r = learned
    for cell in ("gated", "tanh"):
        curve = r.curves[(cell, 4)]
        assert curve.shape == (2, 60)
        assert curve[:, -10:].mean() < 0.7 * curve[:, :10].mean()  # it learns
        assert r.mse[(cell, 4)].shape == (2,) and np.all(r.accuracy[(cell, 4)] <= 1)
        assert not np.allclose(curve[0], curve[1])  # seeds differ
    r.save_csv(tmp_path / "l.csv")
    r.save_npz(tmp_path / "l.npz")
    rows = (tmp_path / "l.csv").read_text().splitlines()
    assert rows[0].startswith("cell,length,seed") and len(rows) == 1 + 2 * 2
    assert np.load(tmp_path / "l.npz")["curve_gated_T4"].shape == (2, 60)
    assert r.normalized_mse("gated", 4) == pytest.approx(r.mse[("gated", 4)] * 6)


@settings(max_examples=200)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 40), length=st.integers(2, 60))
def test_adding_problem_invariants_for_any_size(seed, batch, length):
    xs, ys = adding_problem(np.random.default_rng(seed), batch, length)
    marks = xs[..., 1]
    half = length // 2
    assert np.all(marks[:, :half].sum(1) == 1) and np.all(marks[:, half:].sum(1) == 1)
    assert np.all((xs[..., 0] >= 0) & (xs[..., 0] < 1))
    np.testing.assert_allclose((xs[..., 0] * marks).sum(1), ys)


def test_learning_experiment_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cells"):
        learning_experiment(cells=("lstm",), progress=False)
    with pytest.raises(ValueError, match="lengths"):
        learning_experiment(lengths=(1,), progress=False)


# ---- sharding -------------------------------------------------------------------------------


def test_map_configs_chunks_pads_and_passes_shared():
    fn = lambda shared, a, b: {"s": a * shared["k"] + b, "v": jnp.stack([a, b])}
    a = np.arange(7.0)
    b = np.arange(7.0) * 10
    out = map_configs(fn, (a, b), shared={"k": jnp.float64(2.0)}, chunk_size=3, progress=False)
    np.testing.assert_array_equal(out["s"], 2 * a + b)
    assert out["v"].shape == (7, 2)
    with pytest.raises(ValueError, match="configs\\[1\\]"):
        map_configs(fn, (a, b[:3]), progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        map_configs(fn, (a, b), chunk_size=0, progress=False)


_DOUBLE = lambda shared, a: 2.0 * a + shared


@settings(max_examples=30)
@given(total=st.integers(1, 40), chunk=st.integers(1, 50))
def test_map_configs_is_chunk_invariant(total, chunk):
    a = np.arange(total, dtype=np.float64)
    out = map_configs(_DOUBLE, (a,), shared=1.0, chunk_size=chunk, progress=False)
    np.testing.assert_array_equal(out, 2.0 * a + 1.0)


# flow_sweep sharded over the four CPU devices of one process against one device, and the SVD
# refused there: tests/test_distributed.py, in its 4-device process (one JAX start-up).


# ---- plots and the command line -------------------------------------------------------------


def test_plots_of_worst_case_and_learning_render(searched, learned, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from gated_jax.experiments import plots

    wc, lr = searched, learned
    for fig, name in (
        (plots.plot_worst_case(wc, counterexample_rate=0.3), "w"),
        (plots.plot_learning(lr), "l"),
    ):
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def _cli(argv):
    """Exit status of ``gated-jax`` (argparse errors raise SystemExit, others return)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--lengths", "a,b"], "--lengths"),
        (["--lengths", "0"], "`--lengths`"),
        (["--seeds", "0"], "--seeds"),
        (["--cells", "gated,elman"], "`--cells`"),
        (["--wz-norms", "-1"], "`--wz-norms`"),
        (["--parts", "sweep,nope"], "`--parts`"),
        (["--hidden", "x"], "--hidden"),
        (["--bogus"], "--bogus"),
        (["--norm", "qr"], "--norm"),
    ],
)
def test_flow_cli_bad_options_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    assert _cli(["flow", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # rejected before any work


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    for argv in (["flow", "--quick", "--parts", "bounds"], ["report", "--quick"]):
        assert _cli([*argv, "--out", str(afile)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "must be a folder, not a file" in err
    assert _cli(["report", "--quick", "--seed", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "`--seed` (=-1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # rejected before any work


def test_summary_json_is_strict_json_when_a_statistic_is_undefined(tmp_path):
    # no ||W_z|| <= 1 in the grid: the "small weights" statistics are undefined (null, not NaN)
    argv = ["flow", "--quick", "--out", str(tmp_path), "--parts", "sweep", "--cells", "tanh"]
    assert main([*argv, "--wz-norms", "2,4", "--lengths", "5", "--no-progress"]) == 0
    text = (tmp_path / "summary.json").read_text()
    typical = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))["typical"]
    assert typical["tanh"]["median_rate_small"] is None


def test_plots_name_an_unswept_length_or_bad_index():
    from gated_jax.experiments.plots import plot_heatmap, plot_norm_vs_lag

    kw = dict(wz_norms=(1.0,), gate_biases=(0.0,), input_scales=(1.0,), lengths=(4,), seeds=(0,))
    sw = flow_sweep("tanh", n=2, m=2, progress=False, **kw)
    for plot in (plot_norm_vs_lag, plot_heatmap):
        with pytest.raises(ValueError, match=r"`length` \(=16\) must be a swept length"):
            plot(sw, 16)
        with pytest.raises(ValueError, match="`bias_index`"):
            plot(sw, 4, bias_index=3)


def test_flow_config_takes_lists_and_rejects_no_parts():
    cfg = FlowConfig(lengths=[32], wz_norms=[1.0, 2.0])
    assert cfg.lengths == (32,) and cfg.wz_norms == (1.0, 2.0)
    with pytest.raises(ValueError, match="`parts`"):
        FlowConfig(parts=())


def test_flow_cli_quick_writes_data_and_plots_and_norm_power_equals_svd(tmp_path, capsys):
    out = tmp_path / "flow"
    code = main(
        [
            "flow",
            "--quick",
            "--out",
            str(out),
            "--parts",
            "counterexample,sweep",
            "--cells",
            "gated",
            "--lengths",
            "6",
            "--norm",
            "svd",
            "--no-progress",
        ]
    )
    assert code == 0
    names = {p.name for p in out.iterdir()}
    for f in (
        "flow_gated.npz",
        "flow_gated.csv",
        "growth_rates.csv",
        "summary.json",
        "flow.md",
        "flow_norm_vs_lag.png",
        "flow_heatmap.png",
        "flow_baselines.png",
        "flow_growth_rates.png",
    ):
        assert f in names, f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counterexample"]["16"]["jax_grad"] == 256.0
    assert summary["typical"]["length"] == 6
    text = capsys.readouterr().out
    assert "counterexample T=16" in text
    md = (out / "flow.md").read_text()
    assert "![flow_heatmap](flow_heatmap.png)" in md
    # --norm power gives the SVD run's sweep (the run above: one CLI run fewer than a test of
    # its own running both)
    power = tmp_path / "power"
    argv = ["flow", "--quick", "--out", str(power), "--parts", "sweep", "--cells", "gated"]
    assert main([*argv, "--lengths", "6", "--norm", "power", "--no-progress"]) == 0
    np.testing.assert_allclose(
        np.load(power / "flow_gated.npz")["norms_T6"],
        np.load(out / "flow_gated.npz")["norms_T6"],
        rtol=1e-8,
    )
