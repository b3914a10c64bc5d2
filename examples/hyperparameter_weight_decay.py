"""Learning one weight-decay coefficient per parameter (640 hyperparameters) of a multinomial
logistic regression on scikit-learn's 8x8 digits, and what each hypergradient estimator costs.

    L_in(λ, W, T)  = CE(W; 100 training images) + ½ Σ_ij σ(λ_ij) W_ij²      (θ = λ ∈ R^{64x10})
    L_out(λ, W, T) = CE(W; 300 validation images),   W_0 = 0,   r inner GD steps
of size 1. The decay σ(λ) ≈ e^λ for λ ≪ 0 is bounded by 1, so the inner GD stays stable (with
e^λ, an outer step that pushes one λ_ij past log 2 makes that coordinate diverge).

Part 1 compares the estimators at λ = −6: exact reverse mode (Likhosherstov et al. 2021 Alg. 2; Shaban et al. 2019
eq. 6), exact by recomputation (Likhosherstov et al. 2021, §3), exact with ⌈√r⌉ checkpoints (Shaban et al. 2019, Table 1), K-step
truncation (Shaban et al. 2019, eq. 8), FOM (Likhosherstov et al. 2021, Alg. 3) and implicit differentiation with CG (Ji et al. 2021, Alg. 1):
cosine with the exact hypergradient, the counts of Proposition 1 (Likhosherstov et al. 2021), states held and
compiled wall time per call (best of 5). Part 2 learns λ with outer Adam and the exact estimator
(``ablo.outer.run``) and reports test accuracy against the best single shared λ from a grid.

    python examples/hyperparameter_weight_decay.py [--steps 50] [--outer-steps 150]
"""

import argparse
import time

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

import ablo
from ablo import models
from ablo.data import load_digits
from ablo.outer import Budget, Options, Progress, run

def estimators(r: int) -> list:
    """(registry name, options) of every estimator compared in part 1, truncation depths within r."""
    return [("reverse", {}), ("recompute", {}), ("checkpointed", {}), ("truncated", {"K": min(5, r)}),
            ("truncated", {"K": min(20, r)}), ("fom", {}), ("aid-cg", {"maxiter": 20})]


def cross_entropy(w, x, y):
    return models.cross_entropy(x @ w, y)


def inner_loss(lam, w, task):
    return cross_entropy(w, *task["train"]) + 0.5 * jnp.sum(jax.nn.sigmoid(lam) * w ** 2)


def outer_loss(lam, w, task):
    return cross_entropy(w, *task["val"])


def cosine(a, b) -> str:
    a, b = jax.flatten_util.ravel_pytree(a)[0], jax.flatten_util.ravel_pytree(b)[0]
    norm = float(jnp.linalg.norm(a) * jnp.linalg.norm(b))
    return f"{float(a @ b) / norm:.4f}" if norm > 0 else "G = 0"


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="inner GD steps r")
    parser.add_argument("--outer-steps", type=int, default=150)
    args = parser.parse_args()

    x, y = load_digits()
    x = np.hstack([x, np.ones((len(x), 1), np.float32)])[:, 1:]  # a constant feature in place of the blank corner pixel
    order = np.random.default_rng(0).permutation(len(x))
    split = lambda a, b: (jnp.asarray(x[order[a:b]]), jnp.asarray(y[order[a:b]]))
    task = {"train": split(0, 100), "val": split(100, 400)}
    x_test, y_test = split(400, len(x))
    problem = ablo.BilevelProblem(inner_loss, outer_loss, ablo.gd(1.0), args.steps,
                                  init=ablo.constant_init(jnp.zeros((64, 10))))
    lam0 = jnp.full((64, 10), -6.0)

    print(f"Per-parameter weight decay on digits: 640 hyperparameters, r = {args.steps} inner GD steps\n")
    print("Part 1: one hypergradient at lambda = -6")
    print(f"{'estimator':<15}{'cos vs exact':>13}{'grad evals':>11}{'HVPs':>6}{'JVPs':>6}{'states':>8}{'ms/call':>9}")
    exact = None
    for name, opts in estimators(args.steps):
        est = ablo.estimators.get(name, **opts)
        fn = jax.jit(lambda th, st, est=est: est.estimate(problem, th, task, st, jax.random.PRNGKey(0)))
        state = est.init(problem, lam0, task)
        g, _, c = jax.block_until_ready(fn(lam0, state))
        ms = 1000 * min(timed(fn, lam0, state) for _ in range(5))
        exact = g if exact is None else exact
        label = name + "".join(f" {k}={v}" for k, v in opts.items())
        print(f"{label:<15}{cosine(g, exact):>13}{float(c.grad_evals):>11.0f}{float(c.hvps):>6.0f}"
              f"{float(c.jvps):>6.0f}{float(c.states):>8.0f}{ms:>9.1f}")

    def test_metrics(lam):
        w = problem.optimizer.params(problem.run(lam, task))
        return {"test_ce": cross_entropy(w, x_test, y_test), "test_acc": models.accuracy(x_test @ w, y_test)}

    test_metrics = jax.jit(test_metrics)
    val = jax.jit(problem.objective)
    grid = [float(g) for g in np.arange(-12.0, 0.5, 1.0)]
    best = min(grid, key=lambda g: float(val(jnp.full((64, 10), g), task)))
    shared = test_metrics(jnp.full((64, 10), best))
    print(f"\nPart 2: learning lambda with outer Adam (lr 0.1) and the exact estimator, {args.outer_steps} steps")
    res = run(problem, ablo.Reverse(), optax.adam(0.1), lam0, lambda key: task, key=jax.random.PRNGKey(0),
              budget=Budget(steps=args.outer_steps), options=Options(progress=Progress(args.outer_steps)))
    learned = test_metrics(res.theta)
    start = test_metrics(lam0)
    print(f"{'lambda':<34}{'val CE':>8}{'test CE':>9}{'test acc':>9}")
    for label, lam, m in [("-6 everywhere (start)", lam0, start),
                          (f"best shared from a grid ({best:g})", jnp.full((64, 10), best), shared),
                          ("learned, one per parameter", res.theta, learned)]:
        print(f"{label:<34}{float(val(lam, task)):>8.3f}{float(m['test_ce']):>9.3f}{100 * float(m['test_acc']):>8.1f}%")
    decay = np.asarray(res.theta)
    print(f"learned lambda: median {np.median(decay):.2f}, 10%-90% range {np.quantile(decay, 0.1):.2f} to "
          f"{np.quantile(decay, 0.9):.2f}; {res.function_calls:,.0f} function calls in {res.seconds:.1f} s")


if __name__ == "__main__":
    main()
