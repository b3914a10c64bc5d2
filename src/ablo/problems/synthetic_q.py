"""The problem of the ``synthetic-q`` experiment (Likhosherstov et al. 2021 §4.4, §5.1, Figure 1d-f): the
counterexample family (:mod:`.counterexample`) with α a field of the task, so that every (α, seed)
run is a lane of one jitted outer SGD; D² and V² on a θ grid, the expected convergence curves of
an estimator, a vmapped sweep of UFOM over q and the calls to a target gradient norm. ``cfg`` is
the experiment's config (record_every, outer_steps, gamma0).

The ``synthetic-q`` experiment's protocol:

Two equally likely tasks f_i of the counterexample family with a = (0.5, 1.5), b = (0, 10), A = 400
(so f_i is the quadratic a_i z²/2 on the region explored), V(θ) = θ, r = 10 inner GD steps of size α.
For each α on 10 log-spaced values in [1e-3, 5e-2]:

* D² and V² (eq. 14, 16): max over a grid of θ ∈ [−50, 50] of the task means of ‖G_FO − G_exact‖²
  and ‖G_exact‖² (measured with the FOM and Reverse estimators);
* q_theory: q* of eq. 21 with these D², V² and Proposition 1's cost model (C1 = C2 = 1, ε = 0),
  C_rnd taken from UFOM's exact branch (``exact``: Prop. 1 verbatim for the default
  ``recompute``, r(r−1)/2 gradient evaluations and r HVPs; for e.g. ``checkpointed`` its own
  ``backward_cost(r)``, ``theory.cost_model(r, exact=...)``);
* q_grid: the q ∈ linspace(0.05, 1, 20) whose outer SGD (UFOM with that q, one task per step,
  γ_k = γ0/(k+1), θ_0 ~ U(−50, 50), the same number of steps for every q) first brings
  E‖∂M/∂θ(θ_k)‖² (mean over seeds, checked every ``record_every`` steps) to target² or below in the
  fewest expected function calls (mean over seeds of the counted gradient evaluations + HVPs + JVPs;
  ablo also counts V's JVP, so a step costs r + 2 + ξ (C_rnd + 1), e.g. r + 2 + ξ (r(r−1)/2 + r + 1)
  with recomputation, one more than eq. 19's C_det + ξ C_rnd per step and per branch).
  The criterion is the expectation that eq. 18 bounds; FOM (q = 0) stalls at its fixed point
  where ‖∂M/∂θ‖ stays above the target.

At α = ``alpha_curve`` (0.01) the same runs give convergence curves for q = 0 (FOM), q_theory, 1.
Implementation: α enters as a field of the task (inner loss α f_i with unit GD step, identical
dynamics), so for one q every (α, seed) run is a lane of one jitted ``outer.scan`` of
``outer.make_step`` (optax SGD with γ_k = γ0/(k+1)), vmapped over α and seeds; UFOM's random
branch is computed on every lane there but counted only when drawn. The q values > 0 are one
more vmapped axis (q is a traced value of ``UFOM(q=...)``): the whole grid compiles once; q = 0
is FOM, run apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import outer
from ..estimators import FOM, UFOM, Reverse
from ..inner import gd
from ..problem import BilevelProblem
from ..theory import bias_variance
from . import counterexample


def make_problem(r: int):
    """V(θ) = θ, L_in = α f_i(φ) stepped with unit GD (= GD of size α on f_i), L_out = f_i(φ);
    a task is (a_i, b_i, A, α)."""
    f = counterexample.piecewise_f
    return BilevelProblem(lambda theta, phi, task: task[3] * f(phi, task[:3]),
                          lambda theta, phi, task: f(phi, task[:3]), gd(1.0), int(r))


def make_tasks(a, b, A, alpha):
    a = jnp.asarray(a, float)
    return a, jnp.asarray(b, float), jnp.full_like(a, float(A)), jnp.full_like(a, float(alpha))


def measure_d2_v2(problem, task_sets, thetas):
    """[(D², V²) per task set] as maxima over ``thetas`` of the per-θ task means (eq. 14, 16);
    ``task_sets`` stacked on axis 0 (one per α), one jit."""
    per_task = lambda est, tasks: jax.vmap(lambda th: jax.vmap(lambda t: est.estimate(problem, th, t, (), None)[0])(
        tasks))(thetas)
    both = jax.jit(jax.vmap(lambda tasks: (per_task(FOM(), tasks), per_task(Reverse(), tasks))))
    g_fo, g_ex = map(np.asarray, both(task_sets))
    return [tuple(float(x) for x in np.max([bias_variance(fo[i][:, None], ex[i][:, None]) for i in range(len(thetas))],
                                           axis=0)) for fo, ex in zip(g_fo, g_ex)]


def _curves(problem, estimator, task_sets, theta0, keys, cfg):
    """Traceable part of :func:`expected_curves`: |∂M/∂θ(θ_k)| and cumulative calls every
    ``record_every`` steps for every α (axis 0) and seed (axis 1), and the divergence flags."""
    every = cfg.record_every
    steps = every * (cfg.outer_steps // every)

    def one(tasks, theta0, key):
        m = counterexample.sgd_scan(problem, estimator, tasks, theta0, key, cfg.gamma0, steps)
        grad_M = jax.grad(lambda th: jnp.mean(jax.vmap(lambda t: problem.objective(th, t))(tasks)))
        gn = jax.vmap(lambda th: jnp.abs(grad_M(th)))(m["theta"][every - 1::every])
        flags = {k: v for k, v in m.items() if k == "nonfinite" or k.startswith("bad_")}
        return gn, m["function_calls"][every - 1::every], flags

    return jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None))(task_sets, theta0, keys)


def _summarise(gn, calls, flags, label):
    outer.raise_if_diverged(flags, label)
    return np.sqrt(np.mean(np.asarray(gn) ** 2, axis=-2)), np.mean(np.asarray(calls, float), axis=-2)


def expected_curves(problem, estimator, task_sets, theta0, keys, cfg, label: str):
    """Outer SGD with ``estimator`` (one task per step, γ_k = γ0/(k+1)) for every α (task set,
    axis 0) and seed (``theta0``, ``keys``): ``outer.make_step`` under ``outer.scan``, vmapped
    over both, one jit. Returns sqrt(mean over seeds of |∂M/∂θ(θ_k)|²) and the mean cumulative
    function calls at k = every, 2·every, ..., each (n_alpha, steps // every);
    :class:`ablo.outer.Diverged` names the first non-finite step."""
    run = jax.jit(lambda: _curves(problem, estimator, task_sets, theta0, keys, cfg))
    return _summarise(*run(), label)


def ufom_sweep(problem, qs, branch, task_sets, theta0, keys, cfg, label: str):
    """:func:`expected_curves` of UFOM (exact branch ``branch``) for every q in ``qs`` at once: q
    is a traced value of ``UFOM(q=...)``, vmapped, so the whole sweep compiles once. Under vmap UFOM's branch on ξ
    becomes a select (both branches computed, the estimates and counts unchanged). Returns arrays
    of shape (n_alpha, n_q, records)."""
    sweep = jax.jit(jax.vmap(lambda q: _curves(problem, UFOM(q=q, exact=branch), task_sets, theta0, keys, cfg)))
    gn, calls, flags = sweep(jnp.asarray(qs, jnp.result_type(float)))
    for i, q in enumerate(qs):  # name the first diverging q as its spec
        outer.raise_if_diverged(jax.tree_util.tree_map(lambda x: x[i], flags), f"{label}:q={float(q)!r}")
    rms, calls = _summarise(gn, calls, flags, label)
    return np.moveaxis(rms, 0, 1), np.moveaxis(calls, 0, 1)


def calls_to_target(rms, calls, target):
    """Expected function calls at the first step with RMS gradient norm <= target (inf if never)."""
    hit = np.nonzero(rms <= target)[0]
    return float(calls[hit[0]]) if hit.size else float("inf")
