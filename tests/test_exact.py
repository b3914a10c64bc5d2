"""Exact estimators against central finite differences of M^(r)(θ) and against each other
(float64), for GD with a learned step size, momentum and Adam, pytree θ and φ."""

import jax
import jax.numpy as jnp
import pytest

import ablo
from _problems import central_fd, flat, make_task, make_theta, problem

EXACT = {
    "reverse": ablo.Reverse(),
    "recompute": ablo.Recompute(),
    "checkpointed-sqrt": ablo.Checkpointed(),
    "checkpointed-3": ablo.Checkpointed(M=3),
    "binomial-1": ablo.Binomial(s=1),
    "binomial-3": ablo.Binomial(s=3),
    "binomial-log2": ablo.Binomial(),
    "reverse-residuals": ablo.Reverse(store="residuals"),
    "forward": ablo.Forward(),
    "ufom-q1": ablo.UFOM(q=1.0),
    "ufom-q1-checkpointed": ablo.UFOM(q=1.0, exact=ablo.Checkpointed(M=2)),
    "ufom-q1-binomial": ablo.UFOM(q=1.0, exact=ablo.Binomial(s=2)),
}


def estimate(p, est, theta, task, key=jax.random.PRNGKey(0)):
    g, _, c = jax.jit(lambda th, k: est.estimate(p, th, task, est.init(p, th, task), k))(theta, key)
    return g, c


#: Each optimizer and each r once in the default run (twelve compilations a case); the full grid is ``-m slow``.
DIAGONAL = {("gd", 1), ("momentum", 50), ("adam", 5)}


@pytest.mark.parametrize("opt, r", [(o, r) if (o, r) in DIAGONAL else pytest.param(o, r, marks=pytest.mark.slow)
                                    for o in ("gd", "momentum", "adam") for r in (1, 5, 50)])
def test_exact_estimators_match_finite_differences_and_each_other(opt, r):
    p = problem(opt, r)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(r))
    fd = flat(central_fd(lambda th: p.objective(th, task), theta))
    assert jnp.linalg.norm(fd) > 1e-3  # a meaningful gradient to compare with
    results = {name: flat(estimate(p, est, theta, task)[0]) for name, est in EXACT.items()}
    ref = results["reverse"]
    for name, g in results.items():
        rel_fd = float(jnp.linalg.norm(g - fd) / jnp.linalg.norm(fd))
        assert rel_fd <= 1e-6, (name, rel_fd)
        rel = float(jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref))
        assert rel <= 1e-10, (name, rel)


@pytest.mark.parametrize("opt", ["gd", "momentum", "adam"])
def test_truncation_interpolates_between_fom_and_exact(opt):
    r = 6
    p = problem(opt, r)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(3))
    exact = flat(estimate(p, ablo.Reverse(), theta, task)[0])
    fom = flat(estimate(p, ablo.FOM(), theta, task)[0])
    full = flat(estimate(p, ablo.Truncated(K=r), theta, task)[0])
    zero = flat(estimate(p, ablo.Truncated(K=0), theta, task)[0])
    assert jnp.allclose(full, exact, rtol=1e-12, atol=1e-14)
    assert jnp.allclose(zero, fom, rtol=1e-12, atol=1e-14)
    # FOM is biased here, and each extra step of back-propagation changes the estimate
    assert float(jnp.linalg.norm(fom - exact)) > 1e-3 * float(jnp.linalg.norm(exact))
    mid = flat(estimate(p, ablo.Truncated(K=3), theta, task)[0])
    assert not jnp.allclose(mid, exact) and not jnp.allclose(mid, fom)


@pytest.mark.parametrize("tx", ["rmsprop", "adam"])  # optax's adam state holds an integer step count
def test_any_optax_transformation_as_inner_dynamics(tx):
    import optax

    from _problems import init, inner_loss, outer_loss

    p = ablo.BilevelProblem(inner_loss, outer_loss, ablo.from_optax(getattr(optax, tx)(0.01)), 8, init=init)
    theta, task = make_theta(), make_task(jax.random.PRNGKey(5))
    fd = flat(central_fd(lambda th: p.objective(th, task), theta))
    for est in (ablo.Reverse(), ablo.Recompute(), ablo.Checkpointed(M=3), ablo.Binomial(s=2), ablo.Forward()):
        g = flat(estimate(p, est, theta, task)[0])
        assert float(jnp.linalg.norm(g - fd) / jnp.linalg.norm(fd)) <= 1e-6, est.name


def test_batch_of_tasks_is_the_mean_of_single_tasks():
    p = problem("momentum", 4)
    theta = make_theta()
    tasks = jax.vmap(make_task)(jax.random.split(jax.random.PRNGKey(0), 3))
    for est in (ablo.Reverse(), ablo.FOM(), ablo.UFOM(q=0.5)):
        key = jax.random.PRNGKey(1)
        g, _, c = jax.jit(lambda k: est.estimate_batch(p, theta, tasks, (), k))(key)
        keys = jax.random.split(key, 3)
        single = jax.jit(lambda task, k: est.estimate(p, theta, task, (), k))  # one compilation for the three
        singles = [single(jax.tree_util.tree_map(lambda x: x[i], tasks), keys[i]) for i in range(3)]
        mean = jax.tree_util.tree_map(lambda *gs: sum(gs) / 3, *[s[0] for s in singles])
        assert jnp.allclose(flat(g), flat(mean), rtol=1e-12)
        assert float(c.grad_evals) == sum(float(s[2].grad_evals) for s in singles)
