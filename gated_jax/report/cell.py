"""Report section: seed 1.2(b), (c): the gated recurrence's dimensions and its closed-form BPTT."""

from __future__ import annotations

ORDER = 30
TITLE = "Seed 1.2(b), (c): the gated recurrence and backpropagation through time"


def section(ctx) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gated_jax import cell
    from gated_jax.testing import plain_scan
    from gated_jax.verification import max_rel_error

    n, m, T, t_star = 3, 5, 12, 8
    with jax.enable_x64(True):
        rng = np.random.default_rng(ctx.seed)
        p = cell.GatedParams(
            jnp.asarray(rng.normal(size=(m, n))),
            jnp.asarray(rng.normal(size=(m, n))),
            jnp.asarray(0.5 * rng.normal(size=(m, m))),
        )
        xs = jnp.asarray(rng.normal(size=(T, n)))
        z0 = jnp.zeros(m)
        zs = cell.gated_scan(p, xs, z0)
        v = jnp.asarray(rng.normal(size=m))

        # loss on ONE state: l = v . z[t*]  ->  dzs is v at step t* and zero elsewhere
        dzs = jnp.zeros((T, m)).at[t_star - 1].set(v)
        dp, dxs, dz0 = cell.gated_bptt(p, xs, z0, dzs)
        auto = jax.grad(
            lambda w: v @ plain_scan(p._replace(w_x=w), xs[None], z0[None])[0, t_star - 1]
        )(p.w_x)

        # the seed's 1.2(c) sum: dl/dz[t] sum_k (prod_{i=k+1}^t J[i]) dz[k]/dW_x (direct part),
        # with dz[k]/dW_x[a, b] = (1 - c[k])_a x[k]_b on row a: a row vector times an outer product
        zprev = jnp.concatenate([z0[None], zs[:-1]])
        c = cell.step.step_with_factors(p, zprev, xs)[1]
        seed_sum = jnp.zeros((m, n))
        for k in range(1, t_star + 1):
            prod = cell.jacobian_product(p, xs, z0, start=k, end=t_star)
            row = (v @ prod) * (1 - c[k - 1])
            seed_sum = seed_sum + jnp.outer(row, xs[k - 1])
        err_seed = max_rel_error(seed_sum, auto)
        err_bptt = max_rel_error(dp.w_x, auto)

        # a loss on every state: the adjoint sums the seed's expression over t
        g = jnp.asarray(rng.normal(size=(T, m)))
        full = cell.gated_bptt(p, xs, z0, g)
        ref = jax.vjp(lambda q: plain_scan(q, xs[None], z0[None])[0], p)[1](g)[0]
        err_all = max_rel_error(full[0], ref)

    return f"""
**Dimensions (1.2(b)).** `x[t]` is in R^n, the state `z[t]` and the gate `c[t]` in R^m,
`W_x, W_c` are `m x n` and `W_z` is `m x m`. The homework's answer `c[t] in R^m` is right: `c[t]`
multiplies `z[t-1]` elementwise. Here `n = {n}`, `m = {m}`, `T = {T}`.

**The gradient's shape (1.2(c)).** The homework writes `dl/dW_x in R^(n x m)`. A gradient has the
shape of its parameter: `gated_bptt` returns `dl/dW_x` of shape `{tuple(dp.w_x.shape)}` = `(m, n)`,
the same as `jax.grad`'s `{tuple(auto.shape)}`. The seed's shape is the transpose.

**The closed form.** With `u[t] = W_x x[t]` and `s[t] = (z[t-1] - u[t]) c[t] (1 - c[t])`,
the one-step Jacobian is `J[t] = diag(c[t]) + diag(s[t]) W_z`. The adjoint
`delta[t] = dl/dz[t]` obeys `delta[t] = g[t] + J[t+1]^T delta[t+1]`, where `g[t]` is the
loss's direct dependence on `z[t]`. Then
`dl/dW_x = sum_t ((1 - c[t]) delta[t]) x[t]^T`,
`dl/dW_c = sum_t (s[t] delta[t]) x[t]^T`, `dl/dW_z = sum_t (s[t] delta[t]) z[t-1]^T`,
`dl/dx[t] = W_c^T (s[t] delta[t]) + W_x^T ((1 - c[t]) delta[t])`, `dl/dz[0] = J[1]^T delta[1]`.

**The homework's formula is the special case of a loss on one state.** For `l = v . z[t*]`
(`t* = {t_star}`), `g` is zero except at `t*`, and unrolling the adjoint gives exactly the
homework's sum `dl/dz[t*] sum_k (prod_(i=k+1..t*) J[i]) dz[k]/dW_x`, with `dz[k]/dW_x` the
direct dependence `(1 - c[k]) x[k]^T` on each row. Computed term by term with the library's
`jacobian_product`, in `W_x`'s own `(m, n)` layout, it matches `jax.grad`:

| quantity | max rel. error vs `jax.grad` of a plain `lax.scan` (float64) |
|---|---:|
| seed 1.2(c) sum, loss on `z[{t_star}]` | {err_seed:.1e} |
| `gated_bptt` `dl/dW_x`, same loss | {err_bptt:.1e} |
| `gated_bptt`, all parameters, loss on every state | {err_all:.1e} |

A loss on every state (as in training) needs the sum over `t*` of such sums; the adjoint
recurrence computes all of them in one reverse pass, `O(T)` rather than `O(T^2)` Jacobian
products.

**Forward and backward passes (1.2(c), second part).** The homework says both passes "keep
memory of previous states". More precisely, the backward pass is the forward pass run in reverse
time with the transposed one-step map: the forward loop carries `z[t]` forward through
`z @ W_z^T` (one matmul per step), the backward loop carries `delta[t]` backward through
`(s delta) @ W_z` (one matmul per step, the transpose), and the per-step weight contributions,
which do not depend on each other, are summed as large matmuls over all steps afterwards, just as
the forward pass computes the input projections `W_c x`, `W_x x` for all steps before its loop.
The backward pass needs the forward's states (`z`, `c`, `s`), so it runs after the forward pass;
`gated_scan(..., remat=True)` keeps only every `K`-th state and recomputes the rest.
"""
