"""Gradient-flow experiments: can the gated cell's gradients vanish or explode?

* :mod:`~gated_jax.experiments.analysis`: the bounds that hold (forward box, one-step Jacobian
  bound), their randomized check, and an exact counterexample to "cannot explode".
* :mod:`~gated_jax.experiments.flow`: ``||dz[T]/dz[k]||`` against the lag over grids of
  recurrent-weight scale, gate bias, input scale, length and seed, vmapped over configurations.
* :mod:`~gated_jax.experiments.baselines`: the same sweep for a tanh RNN and Flax's
  ``GRUCell``/``LSTMCell``.
* :mod:`~gated_jax.experiments.sharding`: chunked, device-sharded mapping over configurations.
* :mod:`~gated_jax.experiments.distributed`: several processes (hosts) on JAX's distributed
  runtime, and data-parallel training.
* :mod:`~gated_jax.experiments.worst_case`: optax gradient ascent on the log-norm.
* :mod:`~gated_jax.experiments.learning`: the adding problem, gated vs tanh, several seeds.
* :mod:`~gated_jax.experiments.plots` and :mod:`~gated_jax.experiments.runner`: figures, and
  the whole experiment in one call (``gated-jax flow``).
"""

from gated_jax.experiments.analysis import COUNTEREXAMPLE_RATE as COUNTEREXAMPLE_RATE
from gated_jax.experiments.analysis import a_priori_step_bound as a_priori_step_bound
from gated_jax.experiments.analysis import check_bounds as check_bounds
from gated_jax.experiments.analysis import counterexample as counterexample
from gated_jax.experiments.analysis import counterexample_check as counterexample_check
from gated_jax.experiments.analysis import state_box as state_box
from gated_jax.experiments.analysis import step_norm_bound as step_norm_bound
from gated_jax.experiments.baselines import FAMILIES as FAMILIES
from gated_jax.experiments.baselines import CellFamily as CellFamily
from gated_jax.experiments.baselines import random_bases as random_bases
from gated_jax.experiments.baselines import resolve_norm as resolve_norm
from gated_jax.experiments.baselines import spectral_norms as spectral_norms
from gated_jax.experiments.baselines import state_flow as state_flow
from gated_jax.experiments.flow import FlowSweep as FlowSweep
from gated_jax.experiments.flow import flow_sweep as flow_sweep
from gated_jax.experiments.flow import growth_rate as growth_rate
from gated_jax.experiments.learning import LearningResult as LearningResult
from gated_jax.experiments.learning import adding_problem as adding_problem
from gated_jax.experiments.learning import learning_experiment as learning_experiment
from gated_jax.experiments.runner import FlowConfig as FlowConfig
from gated_jax.experiments.runner import FlowRun as FlowRun
from gated_jax.experiments.runner import run_flow as run_flow
from gated_jax.experiments.sharding import config_mesh as config_mesh
from gated_jax.experiments.sharding import map_configs as map_configs
from gated_jax.experiments.worst_case import WorstCase as WorstCase
from gated_jax.experiments.worst_case import worst_case_lengths as worst_case_lengths
from gated_jax.experiments.worst_case import worst_case_search as worst_case_search

__all__ = [
    "COUNTEREXAMPLE_RATE",
    "CellFamily",
    "FAMILIES",
    "FlowConfig",
    "FlowRun",
    "FlowSweep",
    "LearningResult",
    "WorstCase",
    "a_priori_step_bound",
    "adding_problem",
    "check_bounds",
    "config_mesh",
    "counterexample",
    "counterexample_check",
    "flow_sweep",
    "growth_rate",
    "learning_experiment",
    "map_configs",
    "random_bases",
    "resolve_norm",
    "run_flow",
    "spectral_norms",
    "state_box",
    "state_flow",
    "step_norm_bound",
    "worst_case_lengths",
    "worst_case_search",
]
