"""The problems of the ``unbiased`` experiment (Likhosherstov et al. 2021 §2: the unbiased alternatives
to UFOM side by side), each returned as (problem, θ, task) at the θ where the estimates are drawn:

* ``lr``: Wu et al. 2018's noisy quadratic (:func:`ablo.online.short_horizon_problem`), θ the log
  inner step size (dim θ = 1), at θ = −2;
* ``schedule``: the same quadratic with a piecewise-constant schedule of 4 log step sizes
  (``pieces`` = 4; dim θ = 4), at θ = −2 everywhere;
* ``synthetic-q``: the quadratic task a = 1.5, b = 10 (A = 400) of the ``synthetic-q`` experiment
  (:mod:`.synthetic_q`, Likhosherstov et al. 2021 §5.1), V(θ) = θ, GD of size α = 0.01 (dim θ = 1), at θ = 0;
* ``weights``: ridge regression on n synthetic examples weighted by σ(θ_i), heavy-ball momentum
  (dim θ = n), at θ = 0;
* ``hypercleaning``: a two-layer ReLU MLP on scikit-learn's 8x8 digits trained on n examples, half
  with a wrong label, weighted by σ(θ_i), GD at α = 1/L (L the top eigenvalue of the inner Hessian at
  φ_0), validation cross-entropy outer loss (:func:`.hypercleaning.make_problem`; dim θ = n), at θ = 0.

:func:`target_runs` measures the function calls each method's outer optimisation needs to reach a
target fixed by exact reverse mode; :func:`online_tuning` runs the experiment's online tuning of
``lr``'s log step size.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..curvature import top_eigenvalue
from ..inner import momentum
from ..models import mlp_init
from ..estimators import Reverse
from ..estimators.base import charge_v
from ..online import calls_to_target, online, short_horizon_problem
from ..problem import BilevelProblem, constant_init
from . import hypercleaning, synthetic_q


def weights_problem(n: int, r: int, seed: int):
    """Ridge regression on n examples weighted by σ(θ_i) (every other label noisy), heavy-ball momentum
    (β = 0.9), validation MSE outer loss; returns (problem, θ_0, task)."""
    d = 5

    @jax.jit  # one compiled program, not one per eager operation
    def data(key):
        kx, kw, kv = jax.random.split(key, 3)
        x, xv = jax.random.normal(kx, (n, d)), jax.random.normal(kv, (n, d))
        w = jax.random.normal(kw, (d,))
        return x, x @ w + 0.5 * jax.random.normal(kv, (n,)) * (jnp.arange(n) % 2), xv, w

    x, y, xv, w = data(jax.random.PRNGKey(seed))
    inner = lambda th, phi, task: 0.5 * jnp.mean(jax.nn.sigmoid(th) * (task[0] @ phi - task[1]) ** 2) + 1e-2 * phi @ phi
    outer = lambda th, phi, task: 0.5 * jnp.mean((task[2] @ phi - task[3]) ** 2)
    prob = BilevelProblem(inner, outer, momentum(0.3, beta=0.9), r, init=constant_init(jnp.zeros(d)))
    return prob, jnp.zeros(n), (x, y, xv, xv @ w)


def hypercleaning_problem(n: int, hidden: int, r: int, seed: int):
    """MLP hypercleaning on digits: n training and n validation examples (class-balanced, ⌊n/2⌋ training
    labels wrong; :func:`.hypercleaning.make_data`), widths [64, hidden, 10] (He init), λ = 0.001/n,
    r GD steps at 1/L, in the default float type; returns (problem, θ_0 = 0, task)."""
    spec = SimpleNamespace(data_dir=None, n_train=n, n_val=n, corrupt=0.5, corruption="wrong", test_set="test")
    task = hypercleaning.make_data(spec, seed)["task"]
    task = {k: v.astype(jnp.result_type(float)) if k.startswith("x") else v for k, v in task.items()}
    phi0 = mlp_init(jax.random.PRNGKey(seed), [task["x"].shape[1], hidden, 10])
    theta = jnp.zeros(n)
    L = top_eigenvalue(hypercleaning.make_problem(steps=r, l2=1e-3 / n, phi0=phi0), theta, task)
    return hypercleaning.make_problem(steps=r, inner_lr=1.0 / L, l2=1e-3 / n, phi0=phi0), theta, task


SCHEDULE_PIECES = 4
#: The problems, in the order :func:`setup` returns them.
PROBLEMS = ("lr", "schedule", "weights", "synthetic-q", "hypercleaning")


def setup(cfg):
    """{problem name: (problem, θ, task)} from the experiment's config (r, n_examples, n_train, hidden, seed)."""
    task = synthetic_q.make_tasks(1.5, 10.0, 400.0, 0.01)
    quadratic = lambda pieces: short_horizon_problem(dim=10, r=cfg.r, noise=0.1, seed=cfg.seed, pieces=pieces)
    return {"lr": (quadratic(1), jnp.asarray(-2.0), None),
            "schedule": (quadratic(SCHEDULE_PIECES), jnp.full(SCHEDULE_PIECES, -2.0), None),
            "weights": weights_problem(cfg.n_examples, cfg.r, cfg.seed),
            "synthetic-q": (synthetic_q.make_problem(cfg.r), jnp.asarray(0.0), task),
            "hypercleaning": hypercleaning_problem(cfg.n_train, cfg.hidden, cfg.r, cfg.seed)}


def online_tuning(problem, theta, task, cfg, key) -> list:
    """Rows of online tuning (:func:`ablo.online.online`: ``cfg.window`` inner steps per outer step,
    ``cfg.online_steps`` outer SGD steps of size ``cfg.online_lr``) by truncated reverse, UFOM-style window
    debiasing and PES, each ending at the mean θ of its last tenth of steps, then the optimum of the
    offline objective M^(r) on a grid of θ ∈ [−4, 1]."""
    rows = []
    for method in ("truncated", "ufom", "pes"):
        thetas = np.asarray(online(problem, theta, task, method, cfg.window, cfg.online_steps, cfg.online_lr, key,
                                   sigma=0.01))
        final = float(thetas[-max(1, len(thetas) // 10):].mean())
        rows.append(dict(method=method, window=cfg.window, final_theta=final,
                         final_objective=float(problem.objective(jnp.asarray(final), task))))
    grid = np.linspace(-4.0, 1.0, 26)
    M = np.asarray(jax.jit(jax.vmap(lambda t: problem.objective(t, task)))(jnp.asarray(grid)))
    return rows + [dict(method="grid optimum of M^(r)", window=problem.steps, final_theta=float(grid[M.argmin()]),
                        final_objective=float(M.min()))]


def target_runs(problem, theta, task, methods: dict, cfg, key):
    """(target row, {method: calls-to-target fields}) for one problem. The target is fixed by exact
    reverse mode: M* = M(θ_0) − ``cfg.target_frac``·(M(θ_0) − M(θ_T)), θ_T after T = ``cfg.target_steps``
    steps of Adam (``cfg.target_lr``) on reverse's hypergradient. Every method then runs the same Adam
    from θ_0 (:func:`ablo.online.calls_to_target`) for ``cfg.target_repeats`` keys within a budget of
    ``cfg.target_budget`` × reverse's T-step calls; a method's fields are the median calls to M* (inf
    when fewer than half the repeats reached it), the fraction of repeats that reached it and the
    repeats' fewest and most calls. One compiled program per problem (the repeats a ``lax.map``);
    ``methods`` are those that accept the problem (``compare`` reports why one does not)."""
    opt = optax.adam(cfg.target_lr)
    per_step = float(charge_v(Reverse().expected_cost(problem.steps), problem, theta, task).function_calls)
    budget = cfg.target_budget * cfg.target_steps * per_step

    @jax.jit
    def runs(keys):
        run = lambda est, k, target, budget_calls: calls_to_target(problem, theta, task, est, k, target=target,
                                                                     budget_calls=budget_calls, optimizer=opt)
        exact = run(Reverse(), keys[0], -jnp.inf, cfg.target_steps * per_step)  # T steps: T reverse estimates
        m0 = problem.objective(theta, task)
        target = m0 - cfg.target_frac * (m0 - exact.objective)
        calls = {label: jax.lax.map(lambda k: run(est, k, target, budget).calls, keys)
                 for label, est in methods.items()}
        return m0, exact.objective, target, calls

    m0, mT, target, calls = runs(jax.random.split(key, cfg.target_repeats))
    fields = {label: dict(calls_to_target=float(np.median(c)), reached=float(np.mean(np.isfinite(c))),
                          calls_min=float(np.min(c)), calls_max=float(np.max(c)))
              for label, c in ((label, np.asarray(c)) for label, c in calls.items())}
    return dict(M_theta0=float(m0), M_thetaT=float(mT), target=float(target), budget_calls=budget), fields

