"""``method="auto"``: the cost model of :mod:`gated_jax.cell.cost` and its decisions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax import cell
from gated_jax.cell import cost
from gated_jax.experiments import counterexample

KINDS = ((None, 0), ("diagonal", 0), ("heads", 16), ("dense", 0))


def _constants(**kw) -> cost.PlatformConstants:
    base = dict(
        step_s=1e-6,
        level_s=1e-6,
        iteration_s=1e-6,
        loop_macs_per_s=1e10,
        bulk_macs_per_s=1e10,
        scan_elems_per_s=1e10,
    )
    return cost.PlatformConstants("test", **(base | kw))


def _it(newton: int, quasi: int | None = None) -> cost.Iterations:
    return cost.Iterations(newton, newton if quasi is None else quasi, 0.5, "given")


# ---- decisions from given constants ----------------------------------------------------------


def test_a_latency_bound_loop_goes_parallel_and_a_slow_scan_stays_sequential():
    shape = cost.Shape(4096, 16, 64, 64, "diagonal")
    # each loop step costs a millisecond: 4096 steps lose to a few scans of 24 levels
    slow_loop = _constants(step_s=1e-3)
    assert cost.decide(shape, slow_loop, _it(5)).method == "deer"
    # the same loop, but scan elements a million times slower: the loop wins
    slow_scan = _constants(step_s=1e-3, scan_elems_per_s=1e4)
    assert cost.decide(shape, slow_scan, _it(5)).method == "sequential"
    # a slow loop with slow scans: the chunked hybrid's short passes and scan over 64 chunk
    # starts win if its copies into the chunk layout are cheap
    chunky = _constants(step_s=1e-3, scan_elems_per_s=1e8)
    d = cost.decide(shape, chunky, _it(5))
    assert d.method == "chunked" and d.seconds["chunked"] < d.seconds["deer"]
    # and T iterations (an expanding cell) never pay: T x (levels) > T steps
    assert cost.decide(shape, slow_loop, _it(4096)).method == "sequential"


def test_dense_cells_choose_between_exact_and_quasi_newton_by_block_cost():
    shape = cost.Shape(4096, 16, 64, 64, "dense")
    c = _constants(step_s=1e-2, bulk_macs_per_s=1e8)  # m^3 block compositions are expensive
    d = cost.decide(shape, c, _it(4, 8), grad=False)  # (its backward pass is the loop)
    assert d.method == "quasi_deer" and d.seconds["deer"] > d.seconds["quasi_deer"]
    c = _constants(step_s=1e-1, scan_elems_per_s=1e7)  # diagonal scans are the slow ones
    d = cost.decide(shape, c, _it(4, 40), grad=False)
    assert d.method == "deer" and d.seconds["deer"] < d.seconds["quasi_deer"]


def test_candidates_follow_the_structure():
    c = _constants()
    for kind, h in KINDS:
        d = cost.decide(cost.Shape(256, 4, 8, 32, kind, h), c, _it(3))
        distinct = {"sequential", "deer", "chunked"} | (
            {"quasi_deer"} if kind in ("dense", "heads") else set()
        )
        assert set(d.seconds) == distinct


def test_the_margin_keeps_near_ties_sequential():
    shape = cost.Shape(1024, 8, 16, 16, "diagonal")
    c = _constants()
    seq = cost.predict(c, "sequential", shape)
    par = cost.predict(c, "deer", shape, 3)
    # scale the loop's latency so that the parallel method is predicted 1.1x faster
    need = (1.1 * par - (seq - shape.T * 2 * c.step_s)) / (shape.T * 2)
    c2 = c._replace(step_s=need)
    d = cost.decide(shape, c2, _it(3))
    assert d.seconds["sequential"] / d.seconds["deer"] == pytest.approx(1.1, rel=1e-6)
    assert d.method == "sequential" and cost.MARGIN > 1.1


def test_the_probe_runs_only_when_one_iteration_could_win():
    calls = []

    def probe():
        calls.append(1)
        return _it(3)

    shape = cost.Shape(2048, 16, 32, 32, "diagonal")
    cost.decide(shape, _constants(step_s=1e-12, loop_macs_per_s=1e15), probe)
    assert calls == []
    assert cost.decide(shape, _constants(step_s=1e-3), probe).method == "deer"
    assert calls == [1]


# ---- monotonic sanity ------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "h"), KINDS)
def test_predicted_time_grows_with_every_size_and_the_iterations(kind, h):
    c = _constants()
    for method in ("sequential", "deer", "quasi_deer", "chunked"):
        base = cost.predict(c, method, cost.Shape(512, 8, 16, 32, kind, h), 4)
        for bigger in (
            cost.Shape(1024, 8, 16, 32, kind, h),
            cost.Shape(512, 16, 16, 32, kind, h),
            cost.Shape(512, 8, 32, 32, kind, h),
            cost.Shape(512, 8, 16, 64, kind, h),
        ):
            assert cost.predict(c, method, bigger, 4) > base
        if method != "sequential" and kind is not None:
            assert cost.predict(c, method, cost.Shape(512, 8, 16, 32, kind, h), 5) > base
        fwd = cost.predict(c, method, cost.Shape(512, 8, 16, 32, kind, h), 4, grad=False)
        assert 0 < fwd < base


def test_the_parallel_share_falls_with_T_and_the_crossover_is_one_way():
    c = cost.SHIPPED["gpu"]
    for kind, h in KINDS:
        ratios, picks = [], []
        for T in (64, 256, 1024, 4096, 16384, 65536):
            s = cost.Shape(T, 16, 256, 256, kind, h)
            ratios.append(cost.predict(c, "deer", s, 6) / cost.predict(c, "sequential", s))
            picks.append(cost.decide(s, c, _it(6, 12)).method != "sequential")
        assert all(b <= a * (1 + 1e-12) for a, b in zip(ratios, ratios[1:], strict=False))
        assert picks == sorted(picks)  # once parallel, parallel for every longer T


def test_iterations_from_a_rate_are_ordered_and_bounded():
    T = 4096
    prev = (0, 0)
    for rho in (0.01, 0.3, 0.6, 0.9, 0.99, 0.999):
        newton, quasi = cost.iterations_from_rate(rho, 1e-5, T)
        assert 1 <= newton <= quasi <= T
        assert newton >= prev[0] and quasi >= prev[1]
        prev = (newton, quasi)
    assert cost.iterations_from_rate(1.0, 1e-5, T) == (T, T)
    assert cost.iterations_from_rate(math.inf, 1e-5, T) == (T, T)
    tight = cost.iterations_from_rate(0.6, 1e-12, T)
    assert tight[0] >= cost.iterations_from_rate(0.6, 1e-5, T)[0]


# ---- the shipped CPU constants: never a parallel method ---------------------------------------


def test_shipped_cpu_constants_keep_the_sequential_loop_where_it_benchmarked_fastest():
    """``gated-jax bench --only parallel`` and ``--only platform`` measured the loop fastest on
    this CPU for every method, structure and length (T = 256 to 4096, B = 16, m = 256): ``auto``
    must not pick a parallel method there, nor on a wider grid of ordinary sizes, at the
    iteration counts measured on contractive cells or even at one iteration."""
    c = cost.SHIPPED["cpu"]
    for kind, h in KINDS:
        for T in (64, 256, 1024, 4096, 16384, 65536):
            for B in (1, 16, 64):
                for m in (8, 64, 256, 1024):
                    hh = min(h, m)
                    s = cost.Shape(T, B, m, m, kind, hh)
                    for k in (1, 5, 10):
                        d = cost.decide(s, c, _it(k, 2 * k))
                        assert d.method == "sequential", (s, k, d)
    assert cell.resolve_method("auto", "cpu") == "sequential"


# ---- the iteration probe, and auto inside gated_scan ------------------------------------------


@pytest.fixture(scope="module")
def small():
    p = cell.init_gated_params(jax.random.key(0), 3, 8, recurrent_gate="diagonal")
    xs = jax.random.normal(jax.random.key(1), (2, 96, 3))
    return p, xs


def test_the_probe_reads_contraction_expansion_and_the_exact_scan(small):
    p, xs = small
    est = cost.estimate_iterations(p, xs)
    assert est.how in ("bound", "lyapunov") and 0 < est.rho < 1
    assert 1 <= est.newton <= est.quasi < 96
    _, info = cell.gated_deer(p, xs)
    assert int(info.iterations) <= 3 * est.newton  # a heuristic, but the right scale
    pc, xc, z0 = counterexample(96)  # LLE = log(2)/2 > 0: expanding
    ce = cost.estimate_iterations(pc, xc, z0)
    assert (ce.newton, ce.quasi, ce.how) == (96, 96, "lyapunov") and ce.rho > 1
    assert cost.estimate_iterations(p._replace(w_z=None), xs).how == "exact"


def test_under_jit_the_estimate_is_the_static_rule(small):
    p, xs = small
    seen = []

    @jax.jit
    def f(p, xs):
        seen.append(cost.estimate_iterations(p, xs))
        return cell.gated_scan(p, xs, method="auto")

    zs = f(p, xs)
    assert seen[0].how == "static" and math.isnan(seen[0].rho)
    np.testing.assert_allclose(zs, cell.gated_scan(p, xs), rtol=1e-12, atol=1e-12)


def test_auto_follows_the_cached_constants_of_its_platform(small, tmp_path, monkeypatch):
    p, xs = small
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # a platform whose loop costs a second per step: any contractive solve is faster
    cost.save_constants(_constants(step_s=1.0)._replace(backend="slowloop"))
    assert cell.resolve_method("auto", "slowloop", params=p, xs=xs) == "deer"
    assert cell.resolve_method("auto", "slowloop") == "sequential"  # no shapes: the loop
    assert cell.resolve_method("auto", "cpu", params=p, xs=xs) == "sequential"
    zs = cell.gated_scan(p, xs, method="auto")
    np.testing.assert_allclose(zs, cell.gated_scan(p, xs), rtol=1e-12, atol=1e-12)


# ---- the cache file --------------------------------------------------------------------------


def test_the_cache_round_trips_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    c = _constants(step_s=1.234567e-6, scan_elems_per_s=2.5e8)._replace(backend="cpu")
    path = cost.save_constants(c)
    assert path == tmp_path / "gated_jax" / "platform-cpu.json" == cost.cache_path("cpu")
    first = path.read_bytes()
    cost.save_constants(c)
    assert path.read_bytes() == first
    back = cost.load_constants(path)
    assert back.backend == "cpu" and back.source == str(path)
    for key in cost.RATES:
        assert getattr(back, key) == pytest.approx(getattr(c, key), rel=1e-3)
    assert cost.platform_constants("cpu") == back
    assert cost.platform_constants("tpu").source == "shipped"


def test_bad_inputs_raise_in_the_project_format(tmp_path):
    with pytest.raises(ValueError, match=r"^`method` \(='fast'\) must be one of"):
        cell.resolve_method("fast")
    with pytest.raises(ValueError, match=r"^`method` \(='fast'\) must be one of"):
        cost.predict(_constants(), "fast", cost.Shape(8, 1, 1, 1))
    with pytest.raises(ValueError, match=r"^`step_s` \(=-1.0\) must be a finite number > 0"):
        cost.save_constants(_constants(step_s=-1.0), tmp_path / "c.json")
    with pytest.raises(ValueError, match=r"^`constants` \(=\{\}\) must be a PlatformConstants"):
        cost.save_constants({}, tmp_path / "c.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"^`path` \(=.*bad.json'\) must be a readable JSON"):
        cost.load_constants(bad)
    bad.write_text('{"format": 99}')
    with pytest.raises(ValueError, match=r"must be a platform-constants file of format 1"):
        cost.load_constants(bad)
    bad.write_text('{"format": 1, "backend": "cpu", "step_s": "fast"}')
    with pytest.raises(ValueError, match=r"^`step_s` \(='fast'\) must be a finite number"):
        cost.load_constants(bad)
    with pytest.raises(ValueError, match=r"^`backend` \(='../x'\) must be a backend name"):
        cost.cache_path("../x")
    with pytest.raises(ValueError, match=r"^`T` \(=-1\) must be"):
        cost.decide(cost.Shape(-1, 1, 1, 1), _constants(), _it(1))
    with pytest.raises(ValueError, match=r"^`grad` \(='yes'\) must be"):
        cell.resolve_method("auto", params=None, xs=jnp.ones((1, 4, 1)), grad="yes")


def test_the_report_section_shows_the_decision_table(tmp_path, monkeypatch):
    from gated_jax.lab import platform
    from gated_jax.lab._report import Context

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    md = platform.section(Context(out_dir=tmp_path, quick=True))
    tables = [line for line in md.splitlines() if line.startswith("| ")]
    rows = [t for t in tables if not t.startswith("| structure")]
    assert len(rows) == 2 * len(platform.STRUCTURES)
    if cost.platform_constants().backend == "cpu":  # this platform's rows: the loop throughout
        for row in rows[: len(platform.STRUCTURES)]:
            cells = [c.strip() for c in row.strip("| ").split("|")][1:]
            assert cells and all(c.startswith("sequential") for c in cells), row
    assert "shipped" in md
