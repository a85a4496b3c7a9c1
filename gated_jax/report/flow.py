"""Report section: seed 1.2(d), can the gated cell's gradients vanish or explode? Evidence."""

from __future__ import annotations

ORDER = 50
TITLE = "Seed 1.2(d): can the gated cell's gradients vanish or explode? (evidence)"


def section(ctx) -> str:
    from gated_jax.experiments import COUNTEREXAMPLE_RATE
    from gated_jax.experiments.runner import FlowConfig, run_flow

    cfg = FlowConfig.quick() if ctx.quick else FlowConfig()
    data_dir = ctx.out_dir / "flow_data"
    run = run_flow(data_dir, cfg, save_figure=ctx.save_figure, progress=False)
    s = run.summary
    ce = s.get("counterexample", {})
    longest = max(ce, key=int) if ce else None
    verdict = [
        'The homework claims this cell "cannot be subject to exploding gradients but can be '
        'subject to vanishing gradients". **The first half is false; the second is true.**',
        "",
        _vanishing(s),
        "- *Exploding*: the gate does not prevent it. The state is bounded (a convex "
        "combination), but the one-step Jacobian `diag(c) + diag((z - u) c (1 - c)) W_z` has "
        "norm up to `1 + R ||W_z|| / 4`, and products of such Jacobians can grow exponentially "
        "with `T` while the state stays in its box: an exact counterexample with `||W_z|| = 1.5` "
        f"grows like `2^(T/2)` (rate {COUNTEREXAMPLE_RATE:.3f} per step)"
        + (
            f", confirmed by `jax.grad` at T = {longest}: `dz[T]/dz[0] = "
            f"{ce[longest]['jax_grad']:.6g}`"
            if longest
            else ""
        )
        + _typical(s)
        + " What the seed's argument shows is only that the `diag(c)` part never amplifies.",
        "",
        f"Data (`.npz`, `.csv`, `summary.json`) are in `{data_dir.name}/`; the same experiment "
        "runs from the command line as `gated-jax flow --out DIR` (sizes and seeds as options).",
        "",
    ]
    return "\n".join(verdict) + "\n" + run.markdown


def _vanishing(s: dict) -> str:
    g = s.get("typical", {}).get("gated")
    base = (
        "- *Vanishing*: with `W_z = 0` the Jacobian is `diag(c)`, `c < 1`, and gradients can "
        "only shrink."
    )
    if not g:
        return base
    T = s["typical"]["length"]
    worst = g["max_rate_small"]
    if worst < 0:
        return base + (
            f" In the sweep every random configuration with `||W_z||_2 <= 1` has a negative "
            f"growth rate at T = {T} (median {g['median_rate_small']:.3f}, largest "
            f"{worst:.3f} per step): `||dz[T]/dz[k]||` decays exponentially in the lag."
        )
    return base + (
        f" In the sweep, configurations with `||W_z||_2 <= 1` have median growth rate "
        f"{g['median_rate_small']:.3f} per step at T = {T} (largest {worst:.3f})."
    )


def _typical(s: dict) -> str:
    g = s.get("typical", {}).get("gated")
    if not g:
        return "."
    T = s["typical"]["length"]
    rho, b, sigma = g["best_at"]
    if g["best_median_rate"] > 0:
        return (
            f"; it is not only a constructed case: with random weights, `||W_z|| = {rho:g}`, "
            f"gate bias {b:g} and input scale {sigma:g} the median growth rate over seeds is "
            f"{g['best_median_rate']:.3f} per step at T = {T} (`||dz[T]/dz[0]||` about "
            f"e^{g['best_median_rate'] * T:.0f}), and {g['frac_positive']:.0%} of all random "
            "configurations of the sweep grow."
        )
    return (
        f"; with random weights no configuration of this sweep grows at T = {T} (largest "
        f"median rate {g['best_median_rate']:.3f}), so explosion needs the right weights and "
        "inputs."
    )
