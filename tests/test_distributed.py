"""Several processes: 2 processes x 2 CPU devices on 127.0.0.1 against 1 process x 4 devices.

The 4-device process also checks ``flow_sweep`` sharded over one process's devices against
one device (one JAX start-up for both checks).

One launch serves every equality check: the two processes of the distributed run and the
single-process reference start together (a module fixture), each runs the same worker script
and saves what it computed; the tests compare the files. Every subprocess runs under a
timeout, and a process that exits with an error ends the launch at once (the others are
killed) with its stderr in the failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT = (
    480  # seconds for one launch: imports and compiles on a 2-core box shared by other jobs
)

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    t0 = time.perf_counter()
    def tick(what):  # phase times on stderr, shown when a launch fails
        print(f"{time.perf_counter() - t0:6.1f} s {what}", file=sys.stderr, flush=True)

    role, out = sys.argv[1], Path(sys.argv[2])
    # --norm power: matmuls only (CPU devices calling LAPACK at once hung in the benchmark)
    cli = ["flow", "--quick", "--parts", "sweep", "--cells", "gated", "--no-progress",
           "--chunk-size", "4", "--norm", "power", "--out", str(out / f"flow_{role}")]
    if role != "single":
        cli += ["--coordinator", sys.argv[3], "--num-processes", "2", "--process-id", role,
                "--init-timeout", "60"]
    from gated_jax.cli import main
    assert main(cli) == 0  # for the distributed roles this also joins the job
    tick("cli")

    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import linen as nn
    from gated_jax.experiments import distributed, learning_experiment, map_configs
    from gated_jax.nn import GatedRNN

    assert jax.device_count() == 4 and jax.local_device_count() == (4 if role == "single" else 2)
    one = [jax.local_devices()[0]]
    res, msgs = {}, {}

    # map_configs directly, a pytree out and a pytree `shared`; 7 rows: padding in the last chunk
    a = np.arange(7.0)
    toy = map_configs(lambda s, x, y: {"p": s["k"] * x + y, "q": jnp.stack([x, y])},
                      [a, a ** 2], shared={"k": np.float64(3.0)}, chunk_size=4, progress=False)
    res["toy_p"], res["toy_q"] = toy["p"], toy["q"]
    tick("toy")

    # float32: the learning experiment (vmapped seeds, batch sharded along axis 1)
    learn = dict(lengths=(6,), seeds=(0, 1), cells=("gated",), hidden=4, batch=8, steps=4,
                 test_size=16, dtype="float32", progress=False)
    res["learn_float32"] = learning_experiment(**learn).curves[("gated", 6)]
    if role == "single":
        res["learn_one_float32"] = learning_experiment(devices=one, **learn).curves[("gated", 6)]
    tick("learn")

    class Model(nn.Module):
        dtype: str

        @nn.compact
        def __call__(self, xs):
            h = GatedRNN(4, use_bias=True, dtype=self.dtype, param_dtype=self.dtype)(xs)
            return nn.Dense(1, dtype=self.dtype, param_dtype=self.dtype)(h[:, -1])[:, 0]

    def train(dt, devices):
        with jax.enable_x64(dt == "float64"):
            model, opt = Model(dt), optax.adam(1e-2)
            rng = np.random.default_rng(0)
            xs = rng.standard_normal((5, 8, 6, 2)).astype(dt)  # 5 steps of batch 8, T = 6
            ys = xs.sum(axis=(2, 3))
            params = model.init(jax.random.key(0), xs[0])
            loss = lambda p, b: jnp.mean((model.apply(p, b["x"]) - b["y"]) ** 2)
            mesh = distributed.batch_mesh(devices)
            step = distributed.data_parallel_step(loss, opt, mesh)
            p = distributed.replicate(distributed.to_host(params), mesh)
            s = distributed.replicate(distributed.to_host(opt.init(params)), mesh)
            curve = []
            for x, y in zip(xs, ys):
                p, s, v = step(p, s, distributed.shard_batch({"x": x, "y": y}, mesh))
                curve.append(float(v))
            return np.array(curve)

    # float64: GatedRNN through the generic data-parallel step
    res["rnn_float64"] = train("float64", None)
    if role == "single":
        res["rnn_one_float64"] = train("float64", one)
    tick("rnn")

    if role == "single":  # flow_sweep's configuration axis over this process's 4 devices
        from jax.sharding import NamedSharding, PartitionSpec as P
        from gated_jax.experiments import config_mesh, flow_sweep
        from gated_jax.experiments.sharding import _compiled

        mesh = config_mesh()
        assert mesh.shape == {"config": 4}
        kw = dict(wz_norms=(0.5, 4.0, 9.0), gate_biases=(0.0, 1.0), input_scales=(1.0,),
                  lengths=(7,), seeds=(0, 1, 2), n=3, m=4, progress=False, chunk_size=5,
                  norm="power")
        for cell in ("gated", "tanh"):
            res[f"sweep_{cell}"] = flow_sweep(cell, **kw).norms[7]
            res[f"sweep_one_{cell}"] = flow_sweep(cell, devices=one, **kw).norms[7]
        # an explicit SVD on several CPU devices is refused (sharded LAPACK calls hang)
        try:
            flow_sweep("gated", **dict(kw, norm="svd"))
            msgs["svd_on_4"] = "no error"
        except ValueError as e:
            msgs["svd_on_4"] = str(e)
        res["sweep_one_svd"] = flow_sweep("gated", devices=one, **dict(kw, norm="svd")).norms[7]
        run = _compiled(lambda s, a: a * 2, 1, mesh)
        doubled = run(None, jax.device_put(jnp.arange(8.0), NamedSharding(mesh, P("config"))))
        res["split_over"] = np.array(len(doubled.sharding.device_set))
        tick("sweep")
    else:
        pid = int(role)
        bad = {
            "chunk_size": dict(chunk_size=3),
            "configs": dict(configs=[np.arange(5.0 + pid)]),
            "shared": dict(shared={"k": np.float64(pid)}),
            "shared_tree": dict(shared={"k": 1.0} if pid else {"j": 1.0}),
        }
        for name, over in bad.items():
            kw = dict(dict(configs=[np.arange(5.0)], shared={"k": 1.0}, chunk_size=4), **over)
            try:
                map_configs(lambda s, x: x, kw.pop("configs"), progress=False, **kw)
                msgs[name] = "no error"
            except ValueError as e:
                msgs[name] = str(e)
        # after the refusals the processes still work together
        res["after_errors"] = map_configs(lambda s, x: 2 * x, [a], chunk_size=2, progress=False)
    tick("errors")
    np.savez(out / f"res_{role}.npz", **res)
    (out / f"msgs_{role}.json").write_text(json.dumps(msgs))
    print("OK")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("JAX_ENABLE_X64", None)
    flags = env.get("XLA_FLAGS", "")  # what the root conftest set for the tests, plus devices
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return env


def launch(commands: list[tuple[list[str], dict]], tmp: Path, timeout: float) -> list[str]:
    """Run the commands together; their stdouts, or fail with the first failure's stderr.

    A process that exits with an error stops the launch at once: the others are killed and
    the test fails with its stderr. Past ``timeout`` seconds every process is killed.
    """
    procs, logs = [], []
    try:
        for i, (argv, env) in enumerate(commands):
            out, err = open(tmp / f"p{i}.out", "w+"), open(tmp / f"p{i}.err", "w+")
            logs.append((out, err))
            procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=ROOT))
        deadline = time.monotonic() + timeout
        while None in [p.poll() for p in procs]:  # a list: poll every process each time
            for i, p in enumerate(procs):
                if p.returncode not in (None, 0):
                    logs[i][1].seek(0)
                    pytest.fail(
                        f"process {i} of {len(procs)} exited with {p.returncode}:\n"
                        + logs[i][1].read()[-4000:]
                    )
            if time.monotonic() > deadline:
                pytest.fail(f"the launch ran past {timeout} s; killed")
            time.sleep(0.05)
        for i, p in enumerate(procs):
            if p.returncode != 0:
                logs[i][1].seek(0)
                pytest.fail(
                    f"process {i} exited with {p.returncode}:\n" + logs[i][1].read()[-4000:]
                )
        outs = []
        for out, _ in logs:
            out.seek(0)
            outs.append(out.read())
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for out, err in logs:
            out.close()
            err.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One launch: processes 0 and 1 (2 devices each) and the single process (4 devices)."""
    tmp = tmp_path_factory.mktemp("distributed")
    (tmp / "worker.py").write_text(WORKER)
    addr = f"127.0.0.1:{_free_port()}"
    py = [sys.executable, str(tmp / "worker.py")]
    outs = launch(
        [
            (py + ["0", str(tmp), addr], _env(2)),
            (py + ["1", str(tmp), addr], _env(2)),
            (py + ["single", str(tmp)], _env(4)),
        ],
        tmp,
        LAUNCH_TIMEOUT,
    )
    assert all(o.strip().endswith("OK") for o in outs), outs
    res = {r: dict(np.load(tmp / f"res_{r}.npz")) for r in ("0", "1", "single")}
    msgs = {r: json.loads((tmp / f"msgs_{r}.json").read_text()) for r in ("0", "1", "single")}
    return tmp, res, msgs


def test_map_configs_bit_for_bit_on_every_process(runs):
    _, res, _ = runs
    single = res["single"]
    a = np.arange(7.0)
    np.testing.assert_array_equal(single["toy_p"], 3 * a + a**2)
    np.testing.assert_array_equal(single["toy_q"], np.stack([a, a**2], axis=1))
    for role in ("0", "1"):  # every process holds the whole result
        for key in ("toy_p", "toy_q"):
            np.testing.assert_array_equal(res[role][key], single[key], err_msg=f"{role} {key}")
        np.testing.assert_array_equal(res[role]["after_errors"], 2 * a)


def test_cli_flow_sweep_writes_on_process_0_only_and_equals_single(runs):
    tmp, _, _ = runs
    assert not (tmp / "flow_1").exists()
    got = np.load(tmp / "flow_0" / "flow_gated.npz")
    want = np.load(tmp / "flow_single" / "flow_gated.npz")
    assert sorted(got.files) == sorted(want.files) and "norms_T16" in want.files, want.files
    for k in want.files:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert (tmp / "flow_0" / "flow.md").read_text() == (tmp / "flow_single" / "flow.md").read_text()


@pytest.mark.parametrize("key, tol", [("learn_float32", 1e-6), ("rnn_float64", 1e-12)])
def test_data_parallel_training_matches_single_process(runs, key, tol):
    _, res, _ = runs
    single, one = res["single"][key], res["single"][key.replace("_", "_one_", 1)]
    assert np.all(np.isfinite(one)) and np.ptp(one, axis=-1).min() > 0
    # every process holds the same replicated loss ...
    np.testing.assert_array_equal(res["0"][key], res["1"][key])
    # ... equal to one process with 4 devices (the all-reduce runs over Gloo instead of
    # within one process, which can change the last bit of the gradient sum) and to one
    # unsharded device, to the rounding of that sum
    np.testing.assert_allclose(res["0"][key], single, rtol=tol, atol=0)
    np.testing.assert_allclose(single, one, rtol=tol, atol=0)
    np.testing.assert_allclose(res["0"][key], one, rtol=tol, atol=0)


@pytest.mark.parametrize("cell, rtol", [("gated", 1e-13), ("tanh", 1e-12)])
def test_flow_sweep_over_four_devices_of_one_process_equals_one_device(runs, cell, rtol):
    _, res, _ = runs
    single = res["single"]
    many, one = single[f"sweep_{cell}"], single[f"sweep_one_{cell}"]
    assert many.shape == one.shape == (3, 2, 1, 3, 8) and np.all(np.isfinite(one))  # t = 0..7
    np.testing.assert_allclose(many, one, rtol=rtol)


def test_the_sharded_call_splits_the_configurations_over_the_four_devices(runs):
    _, res, _ = runs
    assert int(res["single"]["split_over"]) == 4


def test_svd_is_refused_on_four_cpu_devices_and_on_one_equals_the_power_method(runs):
    _, res, msgs = runs
    assert msgs["single"]["svd_on_4"].startswith("`norm` (='svd') must be 'power' or 'auto'")
    single = res["single"]
    np.testing.assert_allclose(single["sweep_one_svd"], single["sweep_one_gated"], rtol=1e-12)


def test_mismatched_arguments_raise_the_same_named_error_everywhere(runs):
    _, _, msgs = runs
    want = {
        "chunk_size": "`chunk_size` (=3) must be a multiple of the number of processes (2)",
        "configs": "`configs`",
        "shared": "`shared`",
        "shared_tree": "`shared`",
    }
    for role in ("0", "1"):
        for name, start in want.items():
            assert msgs[role][name].startswith(start), (role, name, msgs[role][name])
        assert "values on process 1 differ" in msgs[role]["shared"]
        for name in ("configs", "shared_tree"):
            assert "structure, shapes or dtypes on process 1 differ" in msgs[role][name]


def test_a_dying_process_fails_the_launch_with_its_stderr(tmp_path):
    addr = f"127.0.0.1:{_free_port()}"
    code = (
        "import sys\nif sys.argv[1] == '1': sys.exit('worker 1 gave up')\n"
        "from gated_jax.experiments import distributed\n"
        f"distributed.initialize('{addr}', 2, 0, timeout=60)\n"
    )
    t0 = time.monotonic()
    py = [sys.executable, "-c", code]
    with pytest.raises(pytest.fail.Exception, match="worker 1 gave up"):
        launch([(py + ["0"], _env(2)), (py + ["1"], _env(2))], tmp_path, 60)
    assert time.monotonic() - t0 < 30  # process 0 was killed, not waited for


@pytest.mark.parametrize(
    "options, option",
    [
        (["--coordinator", "node7"], "--coordinator"),
        (
            ["--coordinator", "h:70000", "--num-processes", "2", "--process-id", "0"],
            "--coordinator",
        ),
        (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id"),
        (["--process-id", "-1"], "--process-id"),
        (["--init-timeout", "0"], "--init-timeout"),
    ],
)
def test_cli_refuses_bad_distributed_values(options, option, capsys, tmp_path):
    from gated_jax.cli import main

    assert main(["flow", "--quick", "--out", str(tmp_path / "o"), *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"`{option}`" in err, err
    assert not (tmp_path / "o").exists()


def test_cli_unreachable_coordinator_is_one_line_in_bounded_time(capsys, tmp_path):
    from gated_jax.cli import main

    addr = f"127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    argv = ["flow", "--coordinator", addr, "--num-processes", "2", "--process-id", "1"]
    assert main([*argv, "--init-timeout", "1", "--out", str(tmp_path / "o")]) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--coordinator`" in err and "reachable" in err, err


# --- a coordinator JAX's runtime cannot use: refused before it is tried ------------------------
# JAX's runtime ends the process on such a coordinator (SIGABRT after ~11 s for a host that does
# not resolve, a segmentation fault for a port in use), so these run the CLI in subprocesses.

BAD_COORDINATOR = textwrap.dedent(
    """
    import sys, time
    import gated_jax.experiments.distributed  # the imports before the clock starts
    from gated_jax.cli import main
    t0 = time.monotonic()
    code = main(sys.argv[1:])
    print(f"{time.monotonic() - t0:.3f}")
    sys.exit(code)
    """
)


@pytest.fixture(scope="module")
def taken_port():
    """A port something else listens on (on every interface) for the module's tests."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def bad_coordinator_runs(tmp_path_factory, taken_port):
    """The CLI with each bad coordinator, all processes at once: ``{case: (code, out, err,
    wall seconds)}``."""
    tmp = tmp_path_factory.mktemp("coordinator")
    cases = {
        "unresolvable as 0": ("no-such-host.invalid:7", "0"),
        "unresolvable as 1": ("no-such-host.invalid:7", "1"),
        "port in use": (f"127.0.0.1:{taken_port}", "0"),
        "not this host": ("192.0.2.1:7", "0"),  # TEST-NET-1: never a host's address
    }
    procs = {}
    for case, (addr, pid) in cases.items():
        argv = [sys.executable, "-c", BAD_COORDINATOR, "flow", "--quick", "--parts", "bounds"]
        argv += ["--coordinator", addr, "--num-processes", "2", "--process-id", pid]
        argv += ["--init-timeout", "3", "--out", str(tmp / case.replace(" ", "_"))]
        pipe = subprocess.PIPE
        procs[case] = (subprocess.Popen(argv, env=_env(1), stdout=pipe, stderr=pipe, text=True),)
        procs[case] += (time.monotonic(),)
    runs = {}
    for case, (p, t0) in procs.items():
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        runs[case] = (p.returncode, out, err, time.monotonic() - t0)
    return tmp, runs


@pytest.mark.parametrize(
    "case, says",
    [
        ("unresolvable as 0", "must be a resolvable HOST:PORT"),
        ("unresolvable as 1", "must be a resolvable HOST:PORT"),
        ("port in use", "must be a port process 0 can serve on"),
        ("not this host", "must be an address of this host"),
    ],
)
def test_cli_bad_coordinator_is_exit_2_one_line_bounded_time(bad_coordinator_runs, case, says):
    tmp, runs = bad_coordinator_runs
    code, out, err, wall = runs[case]
    assert code == 2, (code, err[-3000:])  # not -6 (SIGABRT) nor -11 (SIGSEGV)
    assert err.count("\n") == 1 and err.startswith("gated-jax flow: error: `--coordinator` ")
    assert says in err, err
    # the check itself: at most the 3 s probe (plus slack for a loaded machine); the whole
    # process, interpreter and imports included, well under the runtime's abort
    assert float(out.split()[-1]) < 3 + 5, out
    assert wall < 90, wall
    assert not (tmp / case.replace(" ", "_")).exists()


def test_check_coordinator_refuses_a_taken_port_and_leaves_a_free_one_free(taken_port):
    from gated_jax.experiments.distributed import check_coordinator

    with pytest.raises(ValueError, match=r"^`coordinator` \(='127.0.0.1:\d+'\) must be a port"):
        check_coordinator(f"127.0.0.1:{taken_port}", 0)
    with pytest.raises(ValueError, match="must be a resolvable HOST:PORT"):
        check_coordinator("no-such-host.invalid:1", 3)
    port = _free_port()
    for addr in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert check_coordinator(addr, 0, timeout=5)[1] == port
        assert check_coordinator(addr, 1) == (addr.rpartition(":")[0], port)  # a name only
    with socket.socket() as s:  # the probe released the port (no TIME_WAIT on it)
        s.bind(("0.0.0.0", port))
