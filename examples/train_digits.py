"""Train a convolutional front-end + ``GatedRNN`` classifier on scikit-learn's digits.

A complete training run with the usual tools: a Flax linen model (two 3x3 convolutions over the
8x8 image, then the gated recurrence over its 8 rows, the last state read out by a dense
layer), optax's Adam, a tqdm progress bar, loss and accuracy curves saved as a PNG, and
orbax-checkpoint checkpoints that a later run resumes from: the resumed run equals the
uninterrupted one bit for bit (``tests/test_example.py`` checks it).

The data are scikit-learn's digits (1797 images of 8x8 pixels, 10 classes; they ship with
scikit-learn, nothing is downloaded). Without scikit-learn (``pip install 'gated_jax[examples]'``
brings it) a built-in synthetic task of the same shape takes their place, and the run says so.

Methods (``--method``), each the recurrence of the same classifier:

* ``sequential``: the gated cell with its dense recurrent gate ``W_z``, solved step by step
  (``GatedRNN(..., method="sequential")``, closed-form BPTT);
* ``mingru``: no recurrent gate (``W_z`` absent), one exact associative scan over time;
* ``quasi_deer`` / ``deer``: a diagonal recurrent gate, solved in parallel over time by
  (quasi-)Newton iterations (equal for a diagonal gate);
* ``gru``: the baseline, ``flax.linen.RNN(flax.linen.GRUCell)``.

Usage::

    python examples/train_digits.py --method sequential --epochs 30 --plot digits.png
    python examples/train_digits.py --steps 100 --checkpoint-dir /tmp/ckpt   # stops at step 100
    python examples/train_digits.py --checkpoint-dir /tmp/ckpt --resume      # trains the rest

Data order is a pure function of the data key (two 32-bit words, stored in every checkpoint)
and the step: epoch ``e`` visits the training set in the order
``numpy.random.default_rng([*key, e]).permutation(n)``, so a run restored at any step sees the
same batches as one that never stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from gated_jax.nn import GatedCell, GatedRNN

METHODS = ("sequential", "mingru", "quasi_deer", "deer", "gru")
"""``--method`` choices; ``gru`` is the ``nn.RNN(nn.GRUCell)`` baseline."""

DATA = ("auto", "digits", "synthetic")

_GATE_AND_SOLVER = {
    "sequential": (True, "sequential"),
    "mingru": (False, "deer"),
    "quasi_deer": ("diagonal", "quasi_deer"),
    "deer": ("diagonal", "deer"),
}


# --------------------------------------------------------------------------------------------
# configuration and data
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on (checkpoints store it; a resume must pass the same, but for
    ``epochs``)."""

    method: str = "sequential"
    epochs: int = 30
    batch_size: int = 64
    features: int = 64  # the recurrence's state width
    channels: int = 16  # channels of the two convolutions
    learning_rate: float = 3e-3
    data: str = "auto"
    small: bool = False  # a few hundred examples and a small model: seconds on a CPU
    seed: int = 0  # parameters, data split and data order
    dtype: str = "float32"  # parameter dtype; "float64" needs jax_enable_x64

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method` (={self.method!r}) must be one of {METHODS}")
        if self.data not in DATA:
            raise ValueError(f"`data` (={self.data!r}) must be one of {DATA}")

    @classmethod
    def small_run(cls, **changes) -> Config:
        """The small size: 256 training examples, a 16-wide model, 4 epochs of 8 steps."""
        base = dict(epochs=4, batch_size=32, features=16, channels=4, learning_rate=3e-2)
        base["small"] = True
        return cls(**{**base, **changes})


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images ``(N, 8, 8)`` in ``[0, 1]`` and integer labels, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def sklearn_available() -> bool:
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return False
    return True


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy 8x8 images of 10 fixed random binary patterns (a digits-shaped task).

    Each class is one random pattern (40% of pixels on); an example is its pattern at
    intensity 0.7 plus uniform noise in ``[0, 0.6)``, clipped to ``[0, 1]``, and shifted by one
    row up or down with probability 1/3 each, so the model must look at the rows in context.
    """
    rng = np.random.default_rng(seed)
    patterns = (rng.random((10, 8, 8)) < 0.4).astype(np.float64)
    labels = rng.integers(0, 10, size=n)
    shifts = rng.integers(-1, 2, size=n)
    images = np.stack(
        [np.roll(patterns[k], s, axis=0) for k, s in zip(labels, shifts, strict=True)]
    )
    images = np.clip(0.7 * images + 0.6 * rng.random(images.shape), 0.0, 1.0)
    return images, labels


def load_data(data: str = "auto", small: bool = False, seed: int = 0) -> Dataset:
    """scikit-learn's digits (``data="digits"``, or ``"auto"`` when scikit-learn imports), else
    the synthetic task; 80% train, 20% test by a permutation drawn from ``seed``."""
    if data == "digits" or (data == "auto" and sklearn_available()):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels, name = digits.images / 16.0, digits.target, "digits"
    else:
        if data == "auto":
            print(
                "scikit-learn is not installed: training on the built-in synthetic task instead "
                "of the digits (pip install 'gated_jax[examples]' for the real data)",
                file=sys.stderr,
            )
        images, labels = synthetic_digits(1800, seed)
        name = "synthetic"
    order = np.random.default_rng(seed).permutation(len(labels))
    if small:
        order = order[:320]
    n_test = len(order) // 5
    test, train = order[:n_test], order[n_test:]
    return Dataset(name, images[train], labels[train], images[test], labels[test])


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


class ConvRNNClassifier(nn.Module):
    """Two 3x3 convolutions over the image, then a recurrence over its rows, then a readout.

    ``images (*batch, H, W) -> logits (*batch, classes)``: the convolutions keep ``H x W``
    (``SAME``), each row of the feature map (``W * channels`` values) is one time step of the
    recurrence, and its state after the last row feeds a dense layer.
    """

    method: str = "sequential"
    features: int = 64
    channels: int = 16
    classes: int = 10
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        dt = self.param_dtype
        x = images[..., None].astype(dt)
        x = nn.relu(nn.Conv(self.channels, (3, 3), param_dtype=dt, dtype=dt)(x))
        x = nn.relu(nn.Conv(self.channels, (3, 3), param_dtype=dt, dtype=dt)(x))
        rows = x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])  # (*batch, H, W * channels)
        if self.method == "gru":
            states = nn.RNN(nn.GRUCell(self.features, param_dtype=dt, dtype=dt))(rows)
        else:
            gate, solver = _GATE_AND_SOLVER[self.method]
            cell = GatedCell(
                self.features, use_bias=True, recurrent_gate=gate, param_dtype=dt, parent=None
            )
            states = GatedRNN(cell, method=solver)(rows)
        return nn.Dense(self.classes, param_dtype=dt, dtype=dt)(states[..., -1, :])


# --------------------------------------------------------------------------------------------
# the training step (compiled once per model configuration, shared by every run)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Steps:
    model: ConvRNNClassifier
    optimizer: optax.GradientTransformation
    init: Any  # (key, x) -> (params, opt_state)
    train_step: Any  # (params, opt_state, x_all, y_all, index) -> (params, opt_state, loss)
    evaluate: Any  # (params, x, y) -> (loss, accuracy)


@functools.cache
def build_steps(
    method: str, features: int, channels: int, learning_rate: float, dtype: str
) -> Steps:
    """The model, the optimizer and the jitted steps of one configuration (cached, so runs
    with the same model share their compiled code)."""
    model = ConvRNNClassifier(method, features, channels, param_dtype=jnp.dtype(dtype))
    optimizer = optax.adam(learning_rate)

    def loss_fn(params, x, y):
        logits = model.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    @jax.jit
    def init(key, x):
        params = model.init(key, x)
        return params, optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, x_all, y_all, index):
        x, y = x_all[index], y_all[index]
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params, x, y):
        loss, logits = loss_fn(params, x, y)
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    return Steps(model, optimizer, init, train_step, evaluate)


def steps_for(config: Config) -> Steps:
    return build_steps(
        config.method, config.features, config.channels, config.learning_rate, config.dtype
    )


def init_state(config: Config, data: Dataset) -> dict:
    """Parameters, optimizer state and step 0, from ``config.seed``."""
    x = jnp.asarray(data.x_train[:1], config.dtype)
    # JAX's "rbg" generator: on a CPU it compiles in a third of the default threefry's time
    # (initialisation is its only use here; the values differ from threefry's).
    key = jax.random.key(config.seed, impl="rbg")
    params, opt_state = steps_for(config).init(key, x)
    return {"params": params, "opt_state": opt_state, "step": 0}


def data_key(config: Config) -> np.ndarray:
    """The data-order key of a fresh run, ``uint32[2]`` drawn from ``config.seed``
    (checkpoints store the key a run used)."""
    return np.random.SeedSequence([config.seed, 1]).generate_state(2)


def epoch_order(key: np.ndarray, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``n`` training examples (NumPy: no
    compilation, the same on every platform)."""
    return np.random.default_rng([*key.tolist(), epoch]).permutation(n)


# --------------------------------------------------------------------------------------------
# checkpoints (orbax-checkpoint)
# --------------------------------------------------------------------------------------------


def checkpoint_manager(directory: str | os.PathLike):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(Path(directory).resolve(), options=options)


def save_checkpoint(manager, state: dict, key: np.ndarray, history: dict, config: Config):
    """Saves the training state, the data key and the curves so far at ``state["step"]``."""
    import orbax.checkpoint as ocp

    args = ocp.args.Composite(
        state=ocp.args.StandardSave({**state, "data_key": key}),
        history=ocp.args.JsonSave(history),
        config=ocp.args.JsonSave(dataclasses.asdict(config)),
    )
    manager.save(int(state["step"]), args=args, force=True)
    manager.wait_until_finished()


def restore_checkpoint(manager, like: dict) -> tuple[dict, np.ndarray, dict, dict]:
    """The latest checkpoint: ``(state, data_key, history, config)``, ``state`` with the
    structure, shapes and dtypes of ``like`` (a freshly initialised state)."""
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    like = {**like, "data_key": np.zeros(2, np.uint32)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        history=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore(),
    )
    got = manager.restore(step, args=args)
    # Through the host: arrays as a fresh run has them (uncommitted to a device), so the
    # compiled training step is reused, not compiled again for committed inputs.
    state = jax.tree.map(lambda v: jnp.asarray(np.asarray(v)), dict(got.state))
    key = np.asarray(state.pop("data_key"))
    return state, key, got.history, got.config


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    state: dict  # params, opt_state, step
    history: dict  # "loss" per step; "epoch", "train_loss", "test_loss", "test_accuracy"
    dataset: str
    start_step: int  # the step this run started at (0, or the checkpoint's)
    epoch_ms: list  # wall time of each epoch trained in this run (the first includes compiling)
    test_accuracy: float  # of the parameters where the run ended (an epoch's end or not)


def _empty_history() -> dict:
    return {"loss": [], "epoch": [], "train_loss": [], "test_loss": [], "test_accuracy": []}


def train(
    config: Config,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    data: Dataset | None = None,
) -> Result:
    """Trains ``config.epochs`` epochs (or up to step ``stop_at``), checkpointing at the end of
    every epoch and where it stops when ``checkpoint_dir`` is given; with ``resume`` it starts
    from the latest checkpoint there (the same ``config`` is required, but for ``epochs``:
    more extend the run)."""
    from tqdm.auto import tqdm

    data = data if data is not None else load_data(config.data, config.small, config.seed)
    steps = steps_for(config)
    state, key, history = init_state(config, data), data_key(config), _empty_history()
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    if resume:
        if manager is None:
            raise ValueError("`resume` (=True) must come with a `checkpoint_dir`")
        state, key, history, saved = restore_checkpoint(manager, state)
        mine = dataclasses.asdict(config)
        if {**saved, "epochs": 0} != {**mine, "epochs": 0}:  # more epochs extend a run
            raise ValueError(f"`config` (={config}) must be the checkpoint's ({saved})")
    x_train = jnp.asarray(data.x_train, config.dtype)
    y_train = jnp.asarray(data.y_train, jnp.int32)
    x_test = jnp.asarray(data.x_test, config.dtype)
    y_test = jnp.asarray(data.y_test, jnp.int32)
    per_epoch = len(data.y_train) // config.batch_size
    total = config.epochs * per_epoch
    last = total if stop_at is None else min(stop_at, total)
    step, epoch_ms = int(state["step"]), []
    start_step = step
    bar = tqdm(total=total, initial=step, disable=not progress, desc=config.method, unit="step")
    params, opt_state = state["params"], state["opt_state"]
    while step < last:
        epoch, start = divmod(step, per_epoch)
        order = epoch_order(key, epoch, len(data.y_train))
        t0, losses = time.perf_counter(), []
        end = min(per_epoch, start + last - step)
        for i in range(start, end):
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            params, opt_state, loss = steps.train_step(params, opt_state, x_train, y_train, index)
            losses.append(loss)
            bar.update(1)
        losses = [float(v) for v in jax.device_get(losses)]  # waits for the epoch's steps
        epoch_ms.append(1e3 * (time.perf_counter() - t0))
        history["loss"].extend(losses)
        step += end - start
        if end == per_epoch:  # a whole epoch: evaluate
            n = per_epoch
            test_loss, test_acc = map(float, steps.evaluate(params, x_test, y_test))
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(float(np.mean(history["loss"][-n:])))
            history["test_loss"].append(test_loss)
            history["test_accuracy"].append(test_acc)
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", test_acc=f"{test_acc:.3f}")
        state = {"params": params, "opt_state": opt_state, "step": step}
        if manager is not None and (end == per_epoch or step == last):
            save_checkpoint(manager, state, key, history, config)
    bar.close()
    if manager is not None:
        manager.close()
    accuracy = float(steps.evaluate(params, x_test, y_test)[1])
    return Result(state, history, data.name, start_step, epoch_ms, accuracy)


def plot_history(history: dict, path: str | os.PathLike, title: str = ""):
    """Saves the training loss per step with the test loss per epoch, and the test accuracy per
    epoch, side by side, as ``path`` (PNG); returns the figure."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # a script run without a display
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = np.arange(1, len(history["loss"]) + 1)
    per_epoch = len(history["loss"]) / max(len(history["epoch"]), 1)
    at = np.asarray(history["epoch"]) * per_epoch
    ax_loss.plot(steps, history["loss"], lw=0.8, alpha=0.6, label="train (per step)")
    ax_loss.plot(at, history["train_loss"], "o-", label="train (epoch mean)")
    ax_loss.plot(at, history["test_loss"], "s-", label="test")
    ax_loss.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="loss")
    ax_loss.legend()
    ax_acc.plot(history["epoch"], history["test_accuracy"], "o-")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="accuracy", ylim=(0, 1.01))
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=METHODS, default="sequential", help="the recurrence")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 30; --small 4)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps in all")
    p.add_argument("--checkpoint-dir", default=None, help="save checkpoints here (orbax)")
    p.add_argument("--resume", action="store_true", help="resume from --checkpoint-dir")
    p.add_argument("--small", action="store_true", help="a small run: seconds on a CPU")
    p.add_argument("--plot", default=None, help="save the loss and accuracy curves (PNG)")
    p.add_argument("--data", choices=DATA, default="auto", help="auto: digits if sklearn")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step")
    p.add_argument("--seed", type=int, default=0, help="parameters, split and data order")
    p.add_argument("--float64", action="store_true", help="float64 parameters (enables x64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    changes: dict[str, Any] = dict(method=args.method, data=args.data, seed=args.seed)
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.float64:
        changes["dtype"] = "float64"
    return Config.small_run(**changes) if args.small else Config(**changes)


def main(argv: Sequence[str] | None = None) -> Result:
    args = parse_args(argv)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    config = config_from_args(args)
    result = train(
        config,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        stop_at=args.steps,
        progress=not args.no_progress,
    )
    timed = result.epoch_ms[1:]  # the first epoch of a run compiles the step
    speed = f", {np.median(timed):.1f} ms per epoch after the first" if timed else ""
    print(
        f"{config.method} on {result.dataset}: step {result.state['step']}, "
        f"{len(result.history['epoch'])} epochs{speed}"
    )
    if args.plot and result.history["epoch"]:
        plot_history(result.history, args.plot, f"{config.method} on {result.dataset}")
        print(f"curves saved to {args.plot}")
    print(f"test accuracy {result.test_accuracy:.4f}")
    return result


if __name__ == "__main__":
    main()
