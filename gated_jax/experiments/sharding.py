"""Map a per-configuration function over many configurations: vmapped, chunked, sharded.

``map_configs(fn, configs)`` evaluates ``fn`` (one configuration in, arrays out) on every row of
``configs`` with ``jax.vmap`` -- one compiled program per chunk shape, no Python loop over
configurations. The configuration axis is

* split into chunks of ``chunk_size`` rows (the last chunk is padded by repeating its last row,
  so every chunk reuses one compiled program), bounding memory to one chunk's intermediates;
* sharded over all devices when there are several: a 1-D ``jax.sharding.Mesh`` with axis
  ``"config"`` and ``NamedSharding(mesh, P("config"))`` on every input and output, so each device
  evaluates its slice of the chunk. Configurations are independent, so no communication is
  needed and the results equal the single-device run. The same code runs on a multi-GPU or TPU
  host; on CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` makes four devices;
* across processes after :func:`gated_jax.experiments.distributed.initialize`: the mesh then
  holds every process's devices, each process evaluates its share of every chunk and all of
  them receive the full result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gated_jax._validate import fail, positive_int

__all__ = ["config_mesh", "map_configs"]

AXIS = "config"


def config_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over ``devices`` (default all) with axis ``"config"``; ``None`` for one."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) < 2:
        return None
    return Mesh(np.array(devices), (AXIS,))


@functools.lru_cache(maxsize=8)
def _compiled(fn: Callable, nargs: int, mesh: Mesh | None):
    """``jit(vmap(fn))``, sharded on ``mesh``.

    Cached on the function object, so every chunk of one sweep (and any later call with the same
    ``fn``) reuses one executable; a new closure per call is a new entry, hence the small cache.
    """
    vfn = jax.vmap(fn, in_axes=(None,) + (0,) * nargs)
    if mesh is None:
        return jax.jit(vfn)
    sharding = NamedSharding(mesh, P(AXIS))
    return jax.jit(
        vfn,
        in_shardings=(NamedSharding(mesh, P()),) + (sharding,) * nargs,
        out_shardings=sharding,
    )


def _check_configs(configs, chunk_size: int, processes: int) -> tuple[list[np.ndarray], int]:
    """The configuration arrays as NumPy and their common length ``C``; ``ValueError`` else."""
    configs = [np.asarray(c) for c in configs]
    if not configs:
        raise fail("configs", [], "at least one array")
    total = configs[0].shape[0] if configs[0].ndim else 0
    for i, c in enumerate(configs):
        if c.ndim == 0 or c.shape[0] != total:
            raise fail(
                f"configs[{i}]", c, f"an array with the leading length {total} of configs[0]"
            )
    if total == 0:
        raise fail("configs", configs[0], "non-empty (leading length 0)")
    if chunk_size % processes:
        raise fail("chunk_size", chunk_size, f"a multiple of the number of processes ({processes})")
    return configs, total


def map_configs(
    fn: Callable,
    configs: Sequence[np.ndarray],
    *,
    shared=None,
    chunk_size: int = 256,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    desc: str = "configs",
):
    r"""``fn(shared, *row)`` for every row of ``configs``: vmapped, chunked, sharded; NumPy out.

    With ``C`` configurations, chunk size ``K`` (rounded as below) and ``D`` devices, the
    result is ``stack_c fn(shared, configs[0][c], configs[1][c], ...)`` for ``c = 0..C-1``,
    computed as ``ceil(C / K)`` calls of one compiled ``jit(vmap(fn))``, each device
    evaluating ``K / D`` rows of every chunk.

    Several processes. After :func:`gated_jax.experiments.distributed.initialize`, the default
    ``devices`` are the global devices of every process: call ``map_configs`` on every process
    with the same arguments and each process evaluates the rows its devices hold, then every
    process receives the full result (``process_allgather``). The per-device programs are the
    ones a single process with the same ``D`` devices runs, so the result is bit for bit the
    single-process one. The arguments are compared across processes first (structure, shapes
    and a checksum of ``configs`` and ``shared``): a mismatch raises the same ``ValueError``
    on every process rather than computing a mixture or waiting forever in a collective. The
    progress bar shows on process 0 only. Passing ``devices=jax.local_devices()`` instead
    runs an independent sweep in each process.

    Args:
      fn: ``fn(shared, *row)``, one configuration (one scalar or array per entry of
        ``configs``) to a pytree of arrays.
      configs: arrays with a common leading length ``C`` (the configuration axis).
      shared: a pytree passed whole to every call (not mapped; replicated on every device),
        e.g. tables that configurations index into.
      chunk_size: configurations per compiled call (rounded up to a multiple of the number of
        devices, and down to ``C`` when there are fewer configurations); with several
        processes it must be a multiple of their number.
      devices: devices to shard over (default ``jax.devices()``, every process's); one device
        means no sharding.
      progress: show a tqdm progress bar over chunks (on process 0).
      desc: the progress bar's label.

    Returns:
      ``fn``'s output pytree with a leading axis ``C``, as NumPy arrays (on every process).

    Raises:
      ValueError: empty or ragged ``configs``, a bad ``chunk_size``, or (several processes)
        ``configs``, ``shared`` or ``chunk_size`` that differ between processes.

    Examples:
      >>> import numpy as np
      >>> out = map_configs(lambda s, a, b: s * a + b, [np.arange(5.0), np.ones(5)],
      ...                   shared=np.float32(2.0), chunk_size=2, progress=False)
      >>> out.tolist()
      [1.0, 3.0, 5.0, 7.0, 9.0]
    """
    from tqdm.auto import tqdm

    from gated_jax.experiments.distributed import (
        check_same_on_all_processes,
        global_array,
        is_main_process,
        replicate,
        to_host,
    )

    mesh = config_mesh(devices)
    multi = mesh is not None and mesh.is_multi_process
    if multi:  # every process takes part in the check, even one whose arguments are bad
        error = None
        try:
            chunk_size = positive_int("chunk_size", chunk_size)
            configs, total = _check_configs(configs, chunk_size, jax.process_count())
        except ValueError as e:
            error = str(e)
        check_same_on_all_processes(
            {"chunk_size": chunk_size, "configs": configs, "shared": shared}, error=error
        )
    else:
        chunk_size = positive_int("chunk_size", chunk_size)
        configs, total = _check_configs(configs, chunk_size, 1)
    ndev = 1 if mesh is None else mesh.size
    chunk = min(chunk_size, total)
    chunk = -(-chunk // ndev) * ndev
    nchunks = -(-total // chunk)
    padded = nchunks * chunk
    idx = np.minimum(np.arange(padded), total - 1)
    configs = [c[idx] for c in configs]

    run = _compiled(fn, len(configs), mesh)
    if mesh is None:
        put = lambda a: a
    else:
        sharding = NamedSharding(mesh, P(AXIS))
        put = lambda a: global_array(a, sharding)
        shared = replicate(shared, mesh)

    outs = []
    show = progress and is_main_process()
    bar = tqdm(range(nchunks), desc=desc, unit="chunk", disable=not show, leave=False)
    for i in bar:
        sl = slice(i * chunk, (i + 1) * chunk)
        out = run(shared, *[put(c[sl]) for c in configs])
        outs.append(to_host(out))
    bar.close()
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0)[:total], *outs)
