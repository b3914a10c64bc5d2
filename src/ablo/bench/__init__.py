"""Benchmarks of the hypergradient estimators, an application layer: nothing in the core imports
it. Every benchmark lives here; ``python -m ablo.bench COMMAND`` runs one (``__main__`` lists
them), and ``ablo bench`` runs the ``suite`` without peers.

The 1.00 of a speed claim is the fastest plain JAX program of the same algorithm that a JAX user
would write (``anchors``: every dense-layer layout, and for the exact hypergradient every
``jax.checkpoint`` policy on the plain scan). Each estimator is also timed against one
hand-written program of its own algorithm (``references``; ``suite``), which covers the methods
the anchors do not (truncated, AID-CG, recompute, forward). Programs are timed in the same
single-threaded process, alternately (``worker``); temp memory is XLA's ``memory_analysis``.
Peers (other libraries) are workers of the same protocol (``peers``).

Modules: ``problems`` (data, problems, estimator settings), ``references``, ``worker``, ``suite``,
``report``, ``anchors``, ``ablation`` (ablo's product rewrite), ``exact_branch`` (UFOM's exact
branch), ``tradeoffs``, ``step_vjp``, ``peers``.
"""

from .problems import AID_ITERS, CHECK_R, METHODS, SIZES, build, estimator, load_data, make_data
from .suite import check_r, plan, run_suite
from .worker import compare, worker

__all__ = ["AID_ITERS", "CHECK_R", "METHODS", "SIZES", "build", "compare", "estimator", "load_data", "make_data",
           "check_r", "plan", "run_suite", "worker"]
