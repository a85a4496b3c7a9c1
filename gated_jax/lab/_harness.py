"""Timing and memory harness: interleaved runs, medians, ratios, compile time and memory.

The machines are shared and noisy, so variants are timed *interleaved* in one process (round
robin, each round runs every variant once), and reported as medians and as ratios to a baseline.
Compile time and compiled memory (``memory_analysis()``) are reported separately from run time.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax


@dataclasses.dataclass
class Table:
    """A benchmark result: a title, column names, rows of cells and free-text notes."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_markdown(self) -> str:
        def fmt(v: Any) -> str:
            if isinstance(v, float):
                return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
            return str(v)

        out = [f"### {self.title}", ""]
        out.append("| " + " | ".join(self.columns) + " |")
        out.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            out.append("| " + " | ".join(fmt(v) for v in row) + " |")
        if self.notes:
            out.append("")
            out.extend(f"- {n}" for n in self.notes)
        return "\n".join(out)


def _block(x: Any) -> Any:
    return jax.block_until_ready(x)


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], *, rounds: int = 15, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each zero-argument function, timed round robin.

    Each function is called ``warmup`` times first (compilation happens there), then ``rounds``
    rounds each call every function once, in a rotating order so that no variant always runs
    right after the same neighbour.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            _block(fns[name]())
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            _block(fns[name]())
            samples[name].append(time.perf_counter() - t0)
    return {n: statistics.median(s) for n, s in samples.items()}


@dataclasses.dataclass(frozen=True)
class CompileStats:
    """Seconds to lower+compile and the compiled executable's memory, in bytes."""

    compile_s: float
    temp_bytes: int
    argument_bytes: int
    output_bytes: int


def compile_stats(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CompileStats:
    """Lower and compile ``jax.jit(fn)`` for ``args`` and read its memory analysis."""
    return compiled_with_stats(fn, *args, **kwargs)[1]


def compiled_with_stats(
    fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Any, CompileStats]:
    """:func:`compile_stats` and the compiled executable (call it with the same ``args``): the
    program that was measured is the one timed, compiled once."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args, **kwargs).compile()
    dt = time.perf_counter() - t0
    mem = compiled.memory_analysis()

    def get(attr: str) -> int:
        return int(getattr(mem, attr, 0) or 0) if mem is not None else 0

    return compiled, CompileStats(
        compile_s=dt,
        temp_bytes=get("temp_size_in_bytes"),
        argument_bytes=get("argument_size_in_bytes"),
        output_bytes=get("output_size_in_bytes"),
    )


def matmul_gflops(n: int = 1024, *, rounds: int = 10) -> float:
    """GFLOP/s of a large float32 ``jnp.dot`` on this machine (a roofline to compare against)."""
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    b = jnp.ones((n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    t = time_interleaved({"dot": lambda: f(a, b)}, rounds=rounds)["dot"]
    return 2.0 * n**3 / t / 1e9


def mib(nbytes: float) -> float:
    return nbytes / 2**20


def ratios(times: Mapping[str, float], baseline: str) -> dict[str, float]:
    """``times[baseline] / times[name]``: how many times faster than the baseline each one is."""
    base = times[baseline]
    return {n: base / t for n, t in times.items()}


def device_line() -> str:
    """One line naming the backend and devices, for the top of a benchmark table."""
    devs = jax.devices()
    kinds: Sequence[str] = sorted({d.device_kind for d in devs})
    return f"backend {jax.default_backend()}, {len(devs)} device(s): {', '.join(kinds)}"
