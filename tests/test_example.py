"""The training example (examples/train_digits.py) at a small size: it trains, its command line
works, and a run stopped, checkpointed with orbax and resumed equals the uninterrupted run bit
for bit (float64)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_digits.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_digits", module)
    spec.loader.exec_module(module)
    return module


td = _load_example()

# The command line below asks for the same configuration, so every run here shares one compiled
# training step: two epochs of 8 steps of 32 examples, float64 parameters.
CONFIG = td.Config.small_run(data="synthetic", epochs=2, dtype="float64")
CLI = ["--small", "--data", "synthetic", "--epochs", "2", "--float64", "--no-progress"]


@pytest.fixture(scope="module")
def data():
    return td.load_data("synthetic", small=True)


@pytest.fixture(scope="module")
def uninterrupted(data):
    return td.train(CONFIG, progress=False, data=data)


def _leaves(tree):
    return [np.asarray(v) for v in jax.tree.leaves(tree)]


def _assert_same_state(got: dict, want: dict):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(_leaves(got), _leaves(want), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # bit for bit


def test_the_small_run_trains_in_float64(uninterrupted, data):
    per_epoch = len(data.y_train) // CONFIG.batch_size
    assert uninterrupted.state["step"] == CONFIG.epochs * per_epoch
    assert len(uninterrupted.history["loss"]) == CONFIG.epochs * per_epoch
    assert {v.dtype for v in _leaves(uninterrupted.state["params"])} == {np.dtype("float64")}
    h = uninterrupted.history
    # Learning: the last epoch's mean loss well below the first's, and well below chance
    # (log 10 = 2.30), test accuracy well above chance (0.1).
    assert h["train_loss"][-1] < 0.8 * h["train_loss"][0] and h["train_loss"][-1] < 2.0
    assert h["test_accuracy"][-1] > 0.3


def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path, capsys, uninterrupted, data):
    ckpt = str(tmp_path / "ckpt")
    stopped = td.main([*CLI, "--steps", "5", "--checkpoint-dir", ckpt])  # mid-epoch
    assert stopped.state["step"] == 5
    del stopped  # the "crash": nothing of that run survives but its checkpoint
    plot = tmp_path / "curves.png"
    resumed = td.main([*CLI, "--checkpoint-dir", ckpt, "--resume", "--plot", str(plot)])
    _assert_same_state(resumed.state, uninterrupted.state)
    assert resumed.history == uninterrupted.history  # the curves carry over the stop
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"test accuracy {uninterrupted.history['test_accuracy'][-1]:.4f}"
    # It resumed: this run trained the 11 steps after the checkpoint, not all 16 again.
    assert resumed.start_step == 5 and len(resumed.epoch_ms) == 2
    manager = td.checkpoint_manager(ckpt)
    assert manager.all_steps() == [8, 16]  # max_to_keep=2: the two epoch ends
    manager.close()


def test_resume_refuses_another_configuration(tmp_path, data):
    ckpt = tmp_path / "ckpt"
    td.train(CONFIG, ckpt, stop_at=1, progress=False, data=data)
    other = td.Config.small_run(data="synthetic", epochs=2, dtype="float64", learning_rate=0.1)
    with pytest.raises(ValueError, match="must be the checkpoint's"):
        td.train(other, ckpt, resume=True, progress=False, data=data)


def test_without_scikit_learn_the_synthetic_task_takes_over(monkeypatch, capsys):
    monkeypatch.setattr(td, "sklearn_available", lambda: False)
    ds = td.load_data("auto", small=True)
    assert ds.name == "synthetic"
    assert "scikit-learn is not installed" in capsys.readouterr().err
    assert ds.x_train.shape == (256, 8, 8) and ds.x_test.shape == (64, 8, 8)
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_the_digits_when_scikit_learn_is_there():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    ds = td.load_data("auto", small=False)
    assert ds.name == "digits"
    assert len(ds.y_train) + len(ds.y_test) == 1797 and len(ds.y_test) == 1797 // 5
    assert ds.x_train.shape[1:] == (8, 8) and 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    # The split is a partition of the data set: every (image, label) pair once.
    raw = load_digits()
    pairs = lambda xs, ys: sorted(
        x.tobytes() + bytes([int(y)]) for x, y in zip(xs, ys, strict=True)
    )
    images = np.concatenate([ds.x_train, ds.x_test])
    labels = np.concatenate([ds.y_train, ds.y_test])
    assert pairs(images, labels) == pairs(raw.images / 16.0, raw.target)


@pytest.mark.parametrize(
    ("method", "hc_shape"),
    [("sequential", (16, 16)), ("mingru", None), ("quasi_deer", (16,)), ("deer", (16,))],
)
def test_each_method_is_the_recurrence_it_names(method, hc_shape):
    """The recurrent gate each ``--method`` builds (shapes only: traced, not compiled)."""
    model = td.ConvRNNClassifier(method, features=16, channels=4)
    x = jax.ShapeDtypeStruct((2, 8, 8), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    cell = shapes["GatedRNN_0"]["cell"]
    assert (cell["hc"]["kernel"].shape if "hc" in cell else None) == hc_shape
    assert cell["ic"]["kernel"].shape == (8 * 4, 16)  # a row of the conv features per step


def test_the_baseline_is_flax_gru():
    model = td.ConvRNNClassifier("gru", features=16, channels=4)
    x = jax.ShapeDtypeStruct((2, 8, 8), np.float32)
    cell = jax.eval_shape(model.init, jax.random.key(0), x)["params"]["GRUCell_0"]
    assert set(cell) == {"ir", "iz", "in", "hr", "hz", "hn"}  # nn.GRUCell's gates
