"""Report section: every closed form against autodiff."""

from __future__ import annotations

ORDER = 90
TITLE = "Verification: every closed form against JAX autodiff (float64)"


def section(ctx) -> str:
    from gated_jax import verification

    rows = verification.run_all(seed=ctx.seed)
    bad = [r for r in rows if not r.ok]
    verdict = (
        f"All {len(rows)} formulas agree with autodiff to within {verification.TOLERANCE:g} "
        "relative error."
        if not bad
        else f"**{len(bad)} of {len(rows)} formulas exceed the tolerance.**"
    )
    return verification.format_table(rows) + "\n\n" + verdict
