"""Custom inner dynamics: (1) an optax transformation as the inner optimizer via
``ablo.from_optax``, (2) inner step sizes read from θ, learned as hyperparameters.

Logistic regression on scikit-learn's breast-cancer data (30 standardized features; 60 training,
200 validation, the rest test examples), w_0 = 0.

1. θ = λ ∈ R^30, one L2 strength per feature: L_in = CE(w; train) + ½ Σ_i e^{λ_i} w_i², inner
   dynamics = optax ``chain(clip_by_global_norm(1), sgd(0.1, momentum=0.9, nesterov=True))``,
   r = 30 steps. Every estimator differentiates through the optax update with jax.vjp (Shaban et al. 2019
   §2.2, general dynamics); the exact hypergradient is checked against a central finite
   difference, then λ is learned with outer Adam (``ablo.outer.run``).
2. θ = log step sizes, one per inner GD step: φ_j = φ_{j−1} − e^{θ_j} ∂L_in/∂φ, r = 15
   (``ablo.gd(lambda theta, t: jnp.exp(theta[t]))``); the schedule is learned against the best
   constant step size from a grid.

    python examples/custom_inner_optimizer.py [--outer-steps 100]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ablo
from ablo.outer import Budget, Options, Progress, run


def load():
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    order = np.random.default_rng(0).permutation(len(x))
    part = lambda a, b: (jnp.asarray(x[order[a:b]], jnp.float32), jnp.asarray(y[order[a:b]], jnp.float32))
    return {"train": part(0, 60), "val": part(60, 260)}, part(260, len(x))


def ce(w, x, y):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(x @ w[:-1] + w[-1], y))


def accuracy(w, x, y):
    return jnp.mean(((x @ w[:-1] + w[-1]) > 0) == (y > 0.5))


def outer_loss(theta, w, task):
    return ce(w, *task["val"])


def report(label, problem, theta, task, test):
    w = problem.optimizer.params(problem.run(theta, task))
    print(f"  {label:<50} val CE {float(ce(w, *task['val'])):.4f}   test CE {float(ce(w, *test)):.4f}   "
          f"test acc {100 * float(accuracy(w, *test)):.1f}%")


def per_feature_l2(task, test, outer_steps: int):
    print("1. per-feature L2 strengths, inner optimizer = optax clip + Nesterov SGD (ablo.from_optax)")
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9, nesterov=True))
    inner = lambda lam, w, task: ce(w, *task["train"]) + 0.5 * jnp.sum(jnp.exp(lam) * w[:-1] ** 2)
    problem = ablo.BilevelProblem(inner, outer_loss, ablo.from_optax(tx), 30, init=ablo.constant_init(jnp.zeros(31)))
    lam0 = jnp.full(30, -3.0)
    g, _, c = ablo.hypergradient(problem, ablo.Reverse(), lam0, task)
    v = jax.random.normal(jax.random.PRNGKey(0), (30,))
    h = 1e-2
    fd = (problem.objective(lam0 + h * v, task) - problem.objective(lam0 - h * v, task)) / (2 * h)
    print(f"  exact reverse-mode directional derivative {float(g @ v):+.6f}, central difference {float(fd):+.6f}"
          f" ({c.as_dict()['function_calls']:.0f} function calls)")
    report("lambda = -3 everywhere (start)", problem, lam0, task, test)
    res = run(problem, ablo.Reverse(), optax.adam(0.1), lam0, lambda key: task, key=jax.random.PRNGKey(0),
              budget=Budget(steps=outer_steps), options=Options(progress=Progress(outer_steps)))
    report(f"lambda learned ({outer_steps} outer Adam steps)", problem, res.theta, task, test)
    print(f"  learned e^lambda: min {float(jnp.exp(res.theta.min())):.3g}, max {float(jnp.exp(res.theta.max())):.3g}")


def learned_schedule(task, test, outer_steps: int):
    r = 15
    print(f"\n2. learned inner step sizes, one per step (r = {r}, ablo.gd with lr(theta, t) = exp(theta[t]))")
    inner = lambda theta, w, task: ce(w, *task["train"]) + 1e-3 * jnp.sum(w ** 2)
    problem = ablo.BilevelProblem(inner, outer_loss, ablo.gd(lambda theta, t: jnp.exp(theta[t])), r,
                                  init=ablo.constant_init(jnp.zeros(31)))
    lrs = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    grid = {lr: float(problem.objective(jnp.full(r, np.log(lr)), task)) for lr in lrs}
    best = min(grid, key=grid.get)
    report(f"best constant step size from a grid ({best})", problem, jnp.full(r, np.log(best)), task, test)
    theta0 = jnp.full(r, np.log(0.1))
    res = run(problem, ablo.Reverse(), optax.adam(0.05), theta0, lambda key: task, key=jax.random.PRNGKey(0),
              budget=Budget(steps=outer_steps), options=Options(progress=Progress(outer_steps)))
    report(f"learned schedule ({outer_steps} outer Adam steps from 0.1)", problem, res.theta, task, test)
    print("  learned step sizes: " + " ".join(f"{float(a):.2f}" for a in jnp.exp(res.theta)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outer-steps", type=int, default=100,
                        help="outer Adam steps of part 1 (part 2 takes twice as many)")
    args = parser.parse_args()
    task, test = load()
    per_feature_l2(task, test, args.outer_steps)
    learned_schedule(task, test, 2 * args.outer_steps)


if __name__ == "__main__":
    main()
