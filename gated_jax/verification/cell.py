"""Verification rows for the gated recurrence (:mod:`gated_jax.cell`), float64.

Each closed form is compared with an independent reference: the seed's equations as a NumPy
loop, and JAX autodiff (``jax.vjp`` / ``jax.jacfwd``) of a plain ``lax.scan`` with the whole
cell inside its step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax import cell
from gated_jax.testing import numpy_loop, plain_scan
from gated_jax.verification import Check, max_rel_error

ORDER = 30

_CONFIGS = [
    # (B, T, n, m, bias, reverse, with lengths)
    (3, 8, 3, 4, False, False, False),
    (2, 7, 4, 3, True, True, True),
    (2, 70, 2, 3, True, False, True),  # two segment loops of 35 steps
]


def _case(seed: int, B, T, n, m, bias):
    rng = np.random.default_rng(seed)
    shapes = [(m, n), (m, n), (m, m)] + ([(m,), (m,)] if bias else [])
    p = cell.GatedParams(*[jnp.asarray(rng.normal(size=s)) for s in shapes])
    xs = jnp.asarray(rng.normal(size=(B, T, n)))
    z0 = jnp.asarray(rng.normal(size=(B, m)))
    lengths = jnp.asarray(rng.integers(0, T + 1, size=B))
    ct = jnp.asarray(rng.normal(size=(B, T, m)))
    return p, xs, z0, lengths, ct


def _perturbed_states(p, xs, z0, deltas):
    """Plain-scan states ``z[1..T]`` with ``deltas[k]`` added to ``z[k]``.

    ``jax.jacfwd`` with respect to ``deltas`` gives every ``dz[e]/dz[k]`` at once.
    """

    def step(z, inp):
        x, d = inp
        out = plain_scan(p, x[None, None], (z + d)[None])[0, 0]
        return out, out

    return lax.scan(step, z0, (xs, deltas))[1]


def checks(seed: int) -> list[Check]:
    worst: dict[str, float] = {}
    cases: dict[str, int] = {}

    def record(key: str, err: float) -> None:
        worst[key] = max(worst.get(key, 0.0), err)
        cases[key] = cases.get(key, 0) + 1

    for i, (B, T, n, m, bias, reverse, with_len) in enumerate(_CONFIGS):
        p, xs, z0, lengths, ct = _case(seed * 100 + i, B, T, n, m, bias)
        L = lengths if with_len else None
        kw = dict(seq_lengths=L, reverse=reverse)
        zs = cell.gated_scan(p, xs, z0, **kw)
        ref = numpy_loop(
            p, xs, z0, seq_lengths=None if L is None else np.asarray(L), reverse=reverse
        )
        record("masked" if with_len else "scan", max_rel_error(zs, ref))

        def plain(p, xs, z0, L=L, reverse=reverse):
            return plain_scan(p, xs, z0, seq_lengths=L, reverse=reverse)

        (dp_ref, dx_ref, dz0_ref) = jax.vjp(plain, p, xs, z0)[1](ct)
        dp, dx, dz0 = cell.gated_bptt(p, xs, z0, ct, **kw)
        for name in cell.GatedParams._fields:
            if getattr(p, name) is not None:
                record(f"bptt_{name}", max_rel_error(getattr(dp, name), getattr(dp_ref, name)))
        record("bptt_dxs", max_rel_error(dx, dx_ref))
        record("bptt_dz0", max_rel_error(dz0, dz0_ref))
        for remat in (False, True):
            g = jax.vjp(
                lambda p, xs, z0, r=remat, kw=kw: cell.gated_scan(p, xs, z0, remat=r, **kw),
                p,
                xs,
                z0,
            )
            record("remat" if remat else "vjp", max_rel_error(g[1](ct), (dp_ref, dx_ref, dz0_ref)))

    # Jacobian diagnostics, one sequence, against jacfwd through the plain scan
    ratio = 0.0
    for j in range(3):
        p, xs, z0, _, _ = _case(seed * 100 + 50 + j, 1, 6, 3, 4, j != 1)
        p = p._replace(w_z=p.w_z * (1 + 2 * j))
        xs, z0 = xs[0], z0[0]
        T, m = xs.shape[0], z0.shape[0]
        D = jax.jacfwd(_perturbed_states, argnums=3)(p, xs, z0, jnp.zeros((T, m)))
        record("step", max_rel_error(cell.step_jacobian(p, z0, xs[0]), D[0, :, 0]))
        Js = cell.state_jacobians(p, xs, z0)
        record("states", max_rel_error(Js, jnp.stack([D[t, :, t] for t in range(T)])))
        for s, e in [(0, T), (1, 4)]:
            prod = cell.jacobian_product(p, xs, z0, start=s, end=e)
            record("product", max_rel_error(prod, D[e - 1, :, s]))
        flow = [np.linalg.norm(np.asarray(D[T - 1, :, k]), 2) for k in range(T)] + [1.0]
        record("flow", max_rel_error(cell.gradient_flow(p, xs, z0), np.array(flow)))
        actual = np.linalg.norm(np.asarray(Js), 2, axis=(-2, -1))
        bound = np.asarray(cell.jacobian_norm_bound(p, xs, z0))
        ratio = max(ratio, float(np.max(actual / bound)))

    rows = [
        ("scan", "gated_scan: z[t] = c z[t-1] + (1-c) W_x x[t]", "NumPy loop of seed 1.2"),
        ("masked", "gated_scan, seq_lengths (held states), reverse", "NumPy loop with lengths"),
        ("vjp", "jax.vjp(gated_scan): custom-VJP closed-form BPTT", "jax.vjp of plain lax.scan"),
        ("remat", "jax.vjp(gated_scan, remat=True)", "jax.vjp of plain lax.scan"),
    ]
    rows += [
        (
            f"bptt_{name}",
            f"gated_bptt dl/d{name} = sum_t {term}",
            "jax.vjp of plain lax.scan",
        )
        for name, term in [
            ("w_x", "ubar[t] x[t]^T, shape (m, n)"),
            ("w_c", "pbar[t] x[t]^T"),
            ("w_z", "pbar[t] z[t-1]^T"),
            ("b_c", "pbar[t]"),
            ("b_x", "ubar[t]"),
        ]
    ]
    rows += [
        (
            "bptt_dxs",
            "gated_bptt dl/dx[t] = W_c^T pbar[t] + W_x^T ubar[t]",
            "jax.vjp of plain lax.scan",
        ),
        ("bptt_dz0", "gated_bptt dl/dz0 = J[1]^T delta[1]", "jax.vjp of plain lax.scan"),
        ("step", "step_jacobian: diag(c) + diag((z-u) c (1-c)) W_z", "jax.jacfwd of plain scan"),
        ("states", "state_jacobians J[1..T]", "jax.jacfwd of plain scan"),
        ("product", "jacobian_product dz[end]/dz[start]", "jax.jacfwd of plain scan"),
        ("flow", "gradient_flow: spectral norm of dz[T]/dz[k]", "SVD of jax.jacfwd of plain scan"),
    ]
    out = [
        Check("gated cell", formula, reference, worst[key], cases[key])
        for key, formula, reference in rows
        if key in worst
    ]
    out.append(
        Check(
            "gated cell",
            "jacobian_norm_bound: norm(J) <= max c + max abs(s) norm(W_z); max of actual/bound",
            "SVD of state_jacobians",
            ratio,
            3 * 6,
            tolerance=1.0,
        )
    )
    return out
