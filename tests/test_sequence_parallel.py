"""Sequence parallelism: the time axis sharded over 4 CPU devices of one process, and over
2 processes x 2 CPU devices joined by ``jax.distributed.initialize``.

One launch serves every check (as in tests/test_distributed.py): the two processes of the
distributed run and the 4-device process start together, each runs the worker below under a
timeout, compares the sharded scan and its gradients with the single-device sequential scan in
float64 (its own reference, computed on one device) and saves the errors; the tests read them.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from test_distributed import ROOT, _env, _free_port, launch

LAUNCH_TIMEOUT = 300

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    role, out = sys.argv[1], Path(sys.argv[2])
    if role != "single":
        from gated_jax.experiments import distributed
        distributed.initialize(sys.argv[3], num_processes=2, process_id=int(role), timeout=60)
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from gated_jax.cell import init_gated_params, sequence_parallel_scan

    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()), ("time",))
    seq = NamedSharding(mesh, P(None, "time", None))
    xs_h, z0 = (np.load(out / "inputs.npz")[k] for k in ("xs", "z0"))
    xs = jax.make_array_from_callback(xs_h.shape, seq, lambda i: xs_h[i])
    host = lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))
    res = {}
    for name in sys.argv[4].split(","):
        p = init_gated_params(jax.random.key(1), 3, 4, **KINDS[name])

        def loss(p, x, z):
            zs, info = sequence_parallel_scan(p, x, z, mesh=mesh, axis_name="time")
            return LOSS(zs), (zs, info)

        # one program: the states, the info and every gradient
        (gp, gx, gz), (zs, info) = jax.jit(jax.grad(loss, (0, 1, 2), has_aux=True))(p, xs, z0)
        assert zs.sharding.is_equivalent_to(seq, 3)  # the states stay split along time
        for key, v in dict(zs=zs, dxs=gx, dz0=gz, **gp._asdict(), **info._asdict()).items():
            if v is not None:
                res[f"{name}/{key}"] = host(v) if key in ("zs", "dxs") else np.asarray(v)
        if name == "heads" and role == "single":  # the all-gathers of the compiled program
            sys.path.insert(0, str(Path(sys.argv[5]) / "benchmarks"))
            from sequence_parallel import hlo_all_gathers
            from gated_jax.cell.sharded import collective_bytes
            fwd = jax.jit(lambda p, x, z: sequence_parallel_scan(p, x, z, mesh=mesh,
                                                                 axis_name="time")[0])
            loop, _ = hlo_all_gathers(fwd.lower(p, xs, z0).compile().as_text())
            res["hlo/loop"] = np.asarray(loop)
            res["hlo/shapes"] = np.asarray(sum(collective_bytes(p, 2, 4, 8).values()))
        if name == "dense" and role == "single":  # the relay fallback: 1 update is too few
            zs1, info1 = sequence_parallel_scan(p, xs, z0, mesh=mesh, axis_name="time",
                                                max_iters=1)
            res["relay/zs"], res["relay/converged"] = host(zs1), np.asarray(info1.converged)
            res["relay/sequential"] = np.asarray(info1.sequential)
    np.savez(out / f"sp_{role}.npz", **res)
    print("OK")
    """
)

# the cells, as init_gated_params options, and the loss (shared by the worker and the test)
KINDS = {
    "mingru": dict(recurrent_gate=False),
    "dense": {},
    "diagonal": dict(recurrent_gate="diagonal"),
    "heads": dict(recurrent_gate="heads", heads=2),
}
LOSS = "lambda zs: jnp.sum(jnp.sin(zs) * jnp.arange(1.0, 5.0).reshape(1, 1, 4))"
CELLS = {"single": ("mingru", "dense", "heads"), "0": ("mingru", "heads")}
CELLS["1"] = CELLS["0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sequence_parallel")
    head = f"KINDS = {KINDS!r}\nLOSS = {LOSS}\n"
    (tmp / "worker.py").write_text(
        WORKER.replace(
            "import jax, jax.numpy as jnp, numpy as np",
            "import jax, jax.numpy as jnp, numpy as np\n" + head,
        )
    )
    rng = np.random.default_rng(0)
    np.savez(tmp / "inputs.npz", xs=rng.standard_normal((2, 32, 3)), z0=rng.standard_normal((2, 4)))
    addr = f"127.0.0.1:{_free_port()}"
    py = [sys.executable, str(tmp / "worker.py")]
    cells = {r: ",".join(c) for r, c in CELLS.items()}
    outs = launch(
        [
            (py + ["0", str(tmp), addr, cells["0"]], _env(2)),
            (py + ["1", str(tmp), addr, cells["1"]], _env(2)),
            (py + ["single", str(tmp), "-", cells["single"], str(ROOT)], _env(4)),
        ],
        tmp,
        LAUNCH_TIMEOUT,
    )
    assert all(o.strip().endswith("OK") for o in outs), outs
    inputs = dict(np.load(tmp / "inputs.npz"))
    return inputs, {r: dict(np.load(tmp / f"sp_{r}.npz")) for r in ("0", "1", "single")}


def _reference(name, xs, z0):
    """The single-device sequential scan, its gradients by autodiff (float64)."""
    import jax
    import jax.numpy as jnp

    from gated_jax.cell import gated_scan, init_gated_params

    p = init_gated_params(jax.random.key(1), 3, 4, **KINDS[name])
    loss = eval(LOSS, {"jnp": jnp})
    fn = lambda p, x, z: loss(gated_scan(p, x, z, backward="autodiff"))
    return gated_scan(p, xs, z0), jax.grad(fn, (0, 1, 2))(p, xs, z0)


@pytest.mark.parametrize("role, cell", [(r, c) for r in ("single", "0", "1") for c in CELLS[r]])
def test_sharded_scan_and_gradients_equal_one_device(runs, role, cell):
    inputs, res = runs
    got = {k.split("/")[1]: v for k, v in res[role].items() if k.startswith(cell + "/")}
    zs, (gp, gx, gz) = _reference(cell, inputs["xs"], inputs["z0"])
    assert got["converged"] and not got["sequential"]
    np.testing.assert_allclose(got["zs"], zs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["dxs"], gx, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["dz0"], gz, rtol=0, atol=1e-10)
    for field, want in gp._asdict().items():
        assert (field in got) == (want is not None), field
        if want is not None:
            np.testing.assert_allclose(got[field], want, rtol=0, atol=1e-10, err_msg=field)
    if cell == "mingru":
        assert got["iterations"] == 1  # exact in one pass
    else:  # Newton on the 3 unknown device starts: at most D - 1 = 3 updates
        assert 1 <= got["iterations"] <= 3, got["iterations"]


def test_both_processes_hold_the_same_result(runs):
    _, res = runs
    assert res["0"].keys() == res["1"].keys()
    for k in res["0"]:
        np.testing.assert_array_equal(res["0"][k], res["1"][k], err_msg=k)


def test_all_gathered_bytes_per_newton_iteration_match_the_compiled_program(runs):
    _, res = runs
    # heads (2 of 2 x 2), B = 2, D = 4, float64: e (4, 2, 4), G (4, 2, 2, 2, 2), zmax (4,)
    assert int(res["single"]["hlo/shapes"]) == (4 * 2 * 4 + 4 * 2 * 2 * 2 * 2 + 4) * 8
    assert int(res["single"]["hlo/loop"]) == int(res["single"]["hlo/shapes"])


def test_relay_fallback_gives_the_sequential_states(runs):
    inputs, res = runs
    got = res["single"]
    assert not got["relay/converged"] and got["relay/sequential"]
    zs, _ = _reference("dense", inputs["xs"], inputs["z0"])
    np.testing.assert_allclose(got["relay/zs"], zs, rtol=0, atol=1e-12)


def test_bad_arguments_are_named():
    import jax

    from gated_jax.cell import init_gated_params, sequence_parallel_scan

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("time",))
    p = init_gated_params(jax.random.key(0), 3, 4)
    xs = np.zeros((2, 8, 3))
    with pytest.raises(ValueError, match=r"^`axis_name` \(='seq'\) must be one of"):
        sequence_parallel_scan(p, xs, mesh=mesh, axis_name="seq")
    with pytest.raises(ValueError, match=r"^`mesh` .* must be a jax.sharding.Mesh"):
        sequence_parallel_scan(p, xs, mesh="time", axis_name="time")
    with pytest.raises(ValueError, match=r"^`fallback`"):
        sequence_parallel_scan(p, xs, mesh=mesh, axis_name="time", fallback=1)
