"""The problems of the ``unbiased`` experiment (Likhosherstov et al. 2021 §2: the unbiased alternatives
to UFOM side by side), each returned as (problem, θ, task) at the θ where the estimates are drawn:

* ``lr``: Wu et al. 2018's noisy quadratic (:func:`ablo.online.short_horizon_problem`), θ the log
  inner step size (dim θ = 1), at θ = −2;
* ``synthetic-q``: the quadratic task a = 1.5, b = 10 (A = 400) of the ``synthetic-q`` experiment
  (:mod:`.synthetic_q`, Likhosherstov et al. 2021 §5.1), V(θ) = θ, GD of size α = 0.01 (dim θ = 1), at θ = 0;
* ``weights``: ridge regression on n synthetic examples weighted by σ(θ_i), heavy-ball momentum
  (dim θ = n), at θ = 0;
* ``hypercleaning``: a two-layer ReLU MLP on scikit-learn's 8x8 digits trained on n examples, half
  with a wrong label, weighted by σ(θ_i), GD at α = 1/L (L the top eigenvalue of the inner Hessian at
  φ_0), validation cross-entropy outer loss (:func:`.hypercleaning.make_problem`; dim θ = n), at θ = 0.

:func:`online_tuning` runs the experiment's online tuning of ``lr``'s log step size.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from ..curvature import top_eigenvalue
from ..inner import momentum
from ..models import mlp_init
from ..online import online, short_horizon_problem
from ..problem import BilevelProblem, constant_init
from . import hypercleaning, synthetic_q


def weights_problem(n: int, r: int, seed: int):
    """Ridge regression on n examples weighted by σ(θ_i) (every other label noisy), heavy-ball momentum
    (β = 0.9), validation MSE outer loss; returns (problem, θ_0, task)."""
    kx, kw, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    d = 5
    x, xv = jax.random.normal(kx, (n, d)), jax.random.normal(kv, (n, d))
    w = jax.random.normal(kw, (d,))
    y = x @ w + 0.5 * jax.random.normal(kv, (n,)) * (jnp.arange(n) % 2)
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


def setup(cfg):
    """{problem name: (problem, θ, task)} from the experiment's config (r, n_examples, n_train, hidden, seed)."""
    task = synthetic_q.make_tasks(1.5, 10.0, 400.0, 0.01)
    return {"lr": (short_horizon_problem(dim=10, r=cfg.r, noise=0.1, seed=cfg.seed), jnp.asarray(-2.0), None),
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
