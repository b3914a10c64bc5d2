"""Hyperparameter learning for a Flax NNX model through ``ablo.solve``: one weight decay per layer and
the inner step size, learned by outer Adam on the validation loss.

A two-layer NNX MLP (64-32-10, ReLU) on scikit-learn's 8x8 digits is trained by r steps of
heavy-ball momentum on 100 training images,

    L_in(θ, φ)  = CE(φ; train) + ½ Σ_l e^{θ_decay,l} ‖W_l‖²,    φ_j = momentum step with α = e^{θ_lr},
    L_out(θ, φ) = CE(φ; 300 validation images),

from a fixed initialization. φ is the model's parameter state, ``graphdef, φ_0 = nnx.split(model)``
(the module's non-array parts, e.g. its activation function, stay in ``graphdef``), and the
losses rebuild the model with ``nnx.merge(graphdef, φ)``. The hypergradient is ``jax.grad``
of the validation loss of ``ablo.solve(problem, ablo.Checkpointed())(θ, task)``: exact, with
⌈√r⌉ checkpoints in memory (Shaban et al. 2019 Table 1). The cost record comes from the meter.

    python examples/hyperparameter_flax.py [--steps 30] [--outer-steps 100]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import ablo
from ablo import models
from ablo.data import load_digits


class MLP(nnx.Module):
    """64-32-10 with a ReLU (a non-array attribute: it stays in the graphdef)."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)
        self.activation = jax.nn.relu

    def __call__(self, x):
        return self.out(self.activation(self.hidden(x)))


def digits_task(dtype=jnp.float32):
    """{"train": 100 images, "val": 300 images} and the remaining (test) images."""
    x, y = load_digits()
    order = np.random.default_rng(0).permutation(len(x))
    part = lambda a, b: (jnp.asarray(x[order[a:b]], dtype), jnp.asarray(y[order[a:b]]))
    return {"train": part(0, 100), "val": part(100, 400)}, part(400, len(x))


def build(steps: int, dtype=jnp.float32):
    """(problem, θ0, predict) with ``predict(φ, x) -> logits`` of the NNX model with parameters φ."""
    graphdef, phi0 = nnx.split(MLP(nnx.Rngs(0)))
    phi0 = jax.tree_util.tree_map(lambda p: p.astype(dtype), phi0)
    predict = lambda phi, x: nnx.merge(graphdef, phi)(x)

    def inner_loss(theta, phi, task):
        kernels = [phi["hidden"]["kernel"], phi["out"]["kernel"]]
        decay = sum(jnp.exp(d) * jnp.sum(k ** 2) for d, k in zip(theta["log_decay"], kernels))
        return models.cross_entropy(predict(phi, task["train"][0]), task["train"][1]) + 0.5 * decay

    def outer_loss(theta, phi, task):
        return models.cross_entropy(predict(phi, task["val"][0]), task["val"][1])

    optimizer = ablo.momentum(lambda theta, t: jnp.exp(theta["log_lr"]), beta=0.9)
    problem = ablo.BilevelProblem(inner_loss, outer_loss, optimizer, steps, init=ablo.constant_init(phi0))
    theta0 = {"log_decay": jnp.full(2, np.log(1e-2), dtype), "log_lr": jnp.asarray(np.log(0.1), dtype)}
    return problem, theta0, predict


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="inner momentum steps r")
    parser.add_argument("--outer-steps", type=int, default=100)
    args = parser.parse_args()

    task, (x_test, y_test) = digits_task()
    problem, theta, predict = build(args.steps)
    solver = ablo.solve(problem, ablo.Checkpointed(), with_cost=True)
    val_loss = lambda th, meter: problem.outer_loss(th, solver(th, task, None, meter), task)
    opt = optax.adam(0.05)

    @jax.jit
    def step(theta, opt_state):
        (loss, (g, cost)) = jax.value_and_grad(val_loss, argnums=(0, 1))(theta, ablo.cost_meter())
        updates, opt_state = opt.update(g, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss, cost

    @jax.jit
    def test_metrics(theta):
        phi = problem.optimizer.params(problem.run(theta, task))
        logits = predict(phi, x_test)
        return models.cross_entropy(logits, y_test), models.accuracy(logits, y_test)

    def report(label, theta):
        ce, acc = test_metrics(theta)
        print(f"  {label:<30} weight decay {np.exp(np.asarray(theta['log_decay'])).round(4)}  "
              f"step size {float(jnp.exp(theta['log_lr'])):.3f}  test CE {float(ce):.3f}  test acc {100 * float(acc):.1f}%")

    print(f"Flax NNX MLP on digits, r = {args.steps} inner momentum steps, hypergradient = jax.grad through "
          f"ablo.solve (Checkpointed)")
    report("start", theta)
    opt_state, calls = opt.init(theta), 0.0
    for k in range(args.outer_steps):
        theta, opt_state, loss, cost = step(theta, opt_state)
        calls += float(cost.function_calls)
    report(f"after {args.outer_steps} outer Adam steps", theta)
    print(f"  final validation CE {float(loss):.4f}; {calls:,.0f} function calls (gradient evaluations + HVPs + JVPs)")


if __name__ == "__main__":
    main()
