"""ablo: approximate bi-level optimization in JAX.

Exact, truncated, first-order, unbiased first-order (UFOM) and implicit hypergradients of
M^(r)(θ) = E_T L_out(θ, φ_r, T), behind one interface, each reporting what it cost. Two ways in:
``ablo.solve(problem, estimator)`` (the inner loop as a JAX function; ``jax.grad`` through it is
the estimator's hypergradient) and the explicit ``ablo.hypergradient`` /
``ablo.hypergradient_batch(problem, estimator, θ, task(s), state, key)``.
"""

from . import estimators, inner, meta, outer, theory
from .api import NonFiniteHypergradient, hypergradient, hypergradient_batch, objective
from .cost import Cost
from .estimators import (AID, BSA, FOM, HOAG, TTSA, UFOM, AdaptiveUFOM, Binomial, Checkpointed, Debiased, Estimator, Forward,
                         Recompute, Reverse, StocBiO, Truncated, aid_cg, aid_fp, aid_neumann)
from .inner import adam, from_optax, gd, momentum
from .linear_solvers import CG, FixedPoint, Neumann
from .meta import Reptile
from .outer import Budget, RunResult
from .problem import BilevelProblem, constant_init, identity_init
from .solve_vjp import cost_meter, solve

__version__ = "0.1.0"

__all__ = ["BilevelProblem", "Cost", "NonFiniteHypergradient", "hypergradient", "hypergradient_batch", "objective",
           "solve", "cost_meter", "estimators", "inner", "meta", "outer", "theory", "Budget", "RunResult", "gd",
           "momentum", "adam", "from_optax", "identity_init", "constant_init", "Estimator", "Reverse", "Recompute",
           "Checkpointed", "Binomial", "Forward", "Truncated", "FOM", "UFOM", "AdaptiveUFOM", "Debiased", "AID", "HOAG", "aid_cg",
           "aid_neumann", "aid_fp", "CG", "Neumann", "FixedPoint", "StocBiO", "BSA", "TTSA", "Reptile", "__version__"]
