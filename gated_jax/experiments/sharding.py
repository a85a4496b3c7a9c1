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
  host; on CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` makes four devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gated_jax._validate import positive_int

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
    """``fn(shared, *row)`` for every row of ``configs``: vmapped, chunked, sharded; NumPy out.

    Args:
      fn: ``fn(shared, *row)``, one configuration (one scalar or array per entry of
        ``configs``) to a pytree of arrays.
      configs: arrays with a common leading length ``C`` (the configuration axis).
      shared: a pytree passed whole to every call (not mapped; replicated on every device),
        e.g. tables that configurations index into.
      chunk_size: configurations per compiled call (rounded up to a multiple of the number of
        devices, and down to ``C`` when there are fewer configurations).
      devices: devices to shard over (default all); one device means no sharding.
      progress: show a tqdm progress bar over chunks.
      desc: the progress bar's label.

    Returns:
      ``fn``'s output pytree with a leading axis ``C``, as NumPy arrays.
    """
    from tqdm.auto import tqdm

    chunk_size = positive_int("chunk_size", chunk_size)
    configs = [np.asarray(c) for c in configs]
    if not configs:
        raise ValueError("`configs` (=[]) must hold at least one array")
    total = configs[0].shape[0] if configs[0].ndim else 0
    for i, c in enumerate(configs):
        if c.ndim == 0 or c.shape[0] != total:
            raise ValueError(
                f"`configs[{i}]` has shape {c.shape}; every entry needs the leading length "
                f"{total} of configs[0]"
            )
    if total == 0:
        raise ValueError("`configs` has no rows (leading length 0)")
    mesh = config_mesh(devices)
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
        put = lambda a: jax.device_put(a, sharding)
        shared = jax.device_put(shared, NamedSharding(mesh, P()))

    outs = []
    bar = tqdm(range(nchunks), desc=desc, unit="chunk", disable=not progress, leave=False)
    for i in bar:
        sl = slice(i * chunk, (i + 1) * chunk)
        out = run(shared, *[put(c[sl]) for c in configs])
        outs.append(jax.tree.map(np.asarray, out))
    bar.close()
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0)[:total], *outs)
