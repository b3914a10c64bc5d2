"""Benchmarks of the hypergradient estimators, an application layer: nothing in the
core imports it; ``ablo bench`` and ``benchmarks/bench_estimators.py`` drive it.

Every method's 1.00 is a hand-written JAX program of the same algorithm (``references``), timed
in the same process as ablo's estimator, alternately (``worker``); ablo's reverse is measured
against ``jax.grad`` through a ``lax.scan`` of the same steps, checkpointed against the two-level
``jax.checkpoint`` scheme and against ablo's reverse. Temp memory is XLA's ``memory_analysis``.
Each configuration runs in a fresh single-threaded subprocess per round, rounds interleaved,
medians reported (``suite``); the checks, tables and plots are in ``report``. Peers (other
libraries) are workers of the same protocol (``benchmarks/peers``).

Modules: ``problems`` (data, problems, estimator settings), ``references``, ``worker``, ``suite``,
``report``.
"""

from .problems import AID_ITERS, CHECK_R, METHODS, SIZES, build, estimator, load_data, make_data
from .suite import check_r, plan, run_suite
from .worker import compare, worker

__all__ = ["AID_ITERS", "CHECK_R", "METHODS", "SIZES", "build", "compare", "estimator", "load_data", "make_data",
           "check_r", "plan", "run_suite", "worker"]
