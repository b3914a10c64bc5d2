"""ablo: approximate bi-level optimization in JAX.

Exact, truncated, first-order, unbiased first-order (UFOM) and implicit hypergradients of
M^(r)(θ) = E_T L_out(θ, φ_r, T), behind one interface, each reporting what it cost.
"""

from . import estimators, inner, meta, outer, theory
from .api import NonFiniteHypergradient, hypergradient
from .cost import Cost
from .estimators import FOM, UFOM, Binomial, Checkpointed, Forward, Recompute, Reverse, Truncated
from .inner import adam, from_optax, gd, momentum
from .outer import Budget, RunResult
from .problem import BilevelProblem, constant_init, identity_init

__version__ = "0.1.0"

__all__ = ["BilevelProblem", "Cost", "NonFiniteHypergradient", "hypergradient", "estimators", "inner", "meta",
           "outer", "theory", "Budget", "RunResult", "gd",
           "momentum", "adam", "from_optax", "identity_init", "constant_init", "Reverse", "Recompute",
           "Checkpointed", "Binomial", "Forward", "Truncated", "FOM", "UFOM", "__version__"]
