"""gated_jax.lab.parallel_rnn's pure parts (no compilation): the work model, the recurrent
kernel scaling and the section's exception finder; the benchmark is `gated-jax bench --only
parallel_rnn`."""

import jax.numpy as jnp

from gated_jax.lab import parallel_rnn as P


def test_work_model_counts_linearisations_scans_and_outputs():
    # k = 0 (the guess already solves it): one linearisation and the outputs
    assert P.deer_work(8, 0, 2.0, 6.0, 3, "deer") == (8 * 6.0 + 8 * 2.0) / (8 * 2.0)
    full = P.deer_work(8, 2, 2.0, 6.0, 3, "deer")
    diag = P.deer_work(8, 2, 2.0, 6.0, 3, "quasi_deer")
    assert full - diag == 2 * 2 * 8 * ((2 * 27 + 2 * 9) - 9) / (8 * 2.0)


def test_recurrent_scaled_touches_only_the_h_kernels():
    v = {
        "params": {
            "cell": {
                "hr": {"kernel": jnp.ones(2)},
                "hn": {"bias": jnp.ones(2)},
                "ir": {"kernel": jnp.ones(2)},
                "hc": {"kernel": jnp.ones(3)},
            }
        }
    }
    out = P.recurrent_scaled(v, 3.0)["params"]["cell"]
    assert float(out["hr"]["kernel"][0]) == 3.0 and float(out["hc"]["kernel"][0]) == 3.0
    assert float(out["hn"]["bias"][0]) == 1.0 and float(out["ir"]["kernel"][0]) == 1.0


def test_exceptions_name_a_larger_exponent_with_fewer_iterations():
    rows = [
        {"cell": "a", "scale": 1, "lle": -0.5, "deer": 4},
        {"cell": "a", "scale": 2, "lle": -0.2, "deer": 9},
        {"cell": "b", "scale": 1, "lle": -0.1, "deer": 30},
        {"cell": "b", "scale": 2, "lle": -0.6, "deer": 5},  # sorted by exponent: fine
        {"cell": "c", "scale": 1, "lle": -0.4, "deer": -1},  # unconverged counts as the most
        {"cell": "c", "scale": 2, "lle": 0.1, "deer": 50},
    ]
    assert P.exceptions(rows) == ["c scale 2 < scale 1"]
