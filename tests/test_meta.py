"""Meta-learning presets (ablo.meta): MAML and ANIL problems against hand-written objectives and
finite differences, Reptile's direction and cost, bad inputs."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
import pytest

import ablo
from ablo import meta

R, LR = 3, 0.1


def mlp(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def mse(pred, y):
    return jnp.mean((pred[:, 0] - y) ** 2)


def init_mlp(key, d=2, h=4):
    k1, k2 = jax.random.split(key)
    return {"w1": 0.5 * jax.random.normal(k1, (d, h)), "b1": jnp.zeros(h),
            "w2": 0.5 * jax.random.normal(k2, (h, 1)), "b2": jnp.zeros(1)}


def make_task(key, n=6, d=2):
    k1, k2 = jax.random.split(key)
    xs, xq = jax.random.normal(k1, (n, d)), jax.random.normal(k2, (n, d))
    f = lambda x: jnp.sin(x @ jnp.arange(1.0, d + 1.0))
    return {"support": (xs, f(xs)), "query": (xq, f(xq))}


def flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


@jax.jit
def maml_objective(theta, task):
    """MAML written out by hand: r GD steps on the support set, loss on the query set."""
    phi = theta
    for _ in range(R):
        g = jax.grad(lambda p: mse(mlp(p, task["support"][0]), task["support"][1]))(phi)
        phi = jax.tree_util.tree_map(lambda p, gi: p - LR * gi, phi, g)
    return mse(mlp(phi, task["query"][0]), task["query"][1]), phi


THETA, TASK = init_mlp(jax.random.PRNGKey(0)), make_task(jax.random.PRNGKey(1))
MAML = meta.maml(mlp, mse, LR, R)


def test_maml_reverse_equals_grad_of_handwritten_objective():
    g, _, c = ablo.hypergradient(MAML, ablo.Reverse(), THETA, TASK)
    expected = jax.jit(jax.grad(lambda th: maml_objective(th, TASK)[0]))(THETA)
    assert jnp.allclose(flat(g), flat(expected), rtol=1e-9, atol=1e-12)
    assert float(MAML.objective(THETA, TASK)) == pytest.approx(float(maml_objective(THETA, TASK)[0]), rel=1e-12)
    assert float(c.grad_evals) == R + 1 and float(c.hvps) == R


def test_first_order_maml_is_fom_query_gradient_at_adapted_params():
    g, _, _ = ablo.hypergradient(MAML, ablo.FOM(), THETA, TASK)
    _, phi_r = maml_objective(THETA, TASK)
    expected = jax.grad(lambda p: mse(mlp(p, TASK["query"][0]), TASK["query"][1]))(phi_r)
    assert jnp.allclose(flat(g), flat(expected), rtol=1e-9, atol=1e-12)
    exact, _, _ = ablo.hypergradient(MAML, ablo.Reverse(), THETA, TASK)
    assert not jnp.allclose(flat(g), flat(exact), rtol=1e-3)  # the dropped second-order term matters here


def test_maml_with_other_inner_optimizer_factory():
    problem = meta.maml(mlp, mse, 0.05, R, optimizer=ablo.adam)
    g, _, _ = ablo.hypergradient(problem, ablo.Reverse(), THETA, TASK)
    expected = jax.jit(jax.grad(problem.objective))(THETA, TASK)
    assert jnp.allclose(flat(g), flat(expected), rtol=1e-8, atol=1e-12)


def features(body, x):
    return jnp.tanh(x @ body["w"] + body["b"])


def linear_head(head, z):
    return z @ head["w"] + head["b"]


ANIL_THETA = {"body": {"w": 0.7 * jax.random.normal(jax.random.PRNGKey(2), (2, 3)), "b": jnp.full(3, 0.1)},
              "head": {"w": 0.3 * jax.random.normal(jax.random.PRNGKey(3), (3, 1)), "b": jnp.zeros(1)}}
ANIL = meta.anil(features, linear_head, mse, 0.3, R)


def test_anil_adapts_the_head_only():
    phi0 = ANIL.init(ANIL_THETA, TASK)
    assert flat(phi0).shape == flat(ANIL_THETA["head"]).shape and jnp.array_equal(flat(phi0), flat(ANIL_THETA["head"]))
    phi_r = ANIL.optimizer.params(ANIL.run(ANIL_THETA, TASK))
    assert jax.tree_util.tree_structure(phi_r) == jax.tree_util.tree_structure(ANIL_THETA["head"])
    assert not jnp.allclose(flat(phi_r), flat(phi0))


def test_anil_exact_hypergradient_matches_finite_differences():
    g, _, _ = ablo.hypergradient(ANIL, ablo.Reverse(), ANIL_THETA, TASK)
    vec, unravel = jax.flatten_util.ravel_pytree(ANIL_THETA)
    f = jax.jit(lambda v: ANIL.objective(unravel(v), TASK))
    h = 1e-6
    fd = jnp.stack([(f(vec + h * e) - f(vec - h * e)) / (2 * h) for e in jnp.eye(vec.shape[0])])
    assert jnp.allclose(flat(g), fd, rtol=1e-6, atol=1e-9)
    assert jnp.linalg.norm(flat(g["body"])) > 1e-3  # the body gets a gradient through the features


def test_reptile_direction_cost_and_sgd_update():
    g, _, c = ablo.hypergradient(MAML, ablo.estimators.get("reptile"), THETA, TASK)
    _, phi_r = maml_objective(THETA, TASK)
    assert jnp.allclose(flat(g), flat(THETA) - flat(phi_r), rtol=1e-12, atol=1e-14)
    assert c.as_dict() == {"grad_evals": R, "hvps": 0.0, "jvps": 0.0, "states": 1.0, "samples": 0.0,
                           "nonfinite": False, "function_calls": R}
    eps = 0.25
    updates, _ = optax.sgd(eps).update(g, optax.sgd(eps).init(THETA))
    stepped = optax.apply_updates(THETA, updates)
    assert jnp.allclose(flat(stepped), flat(THETA) + eps * (flat(phi_r) - flat(THETA)), rtol=1e-12)


def test_reptile_task_map_and_batch_mean():
    est = meta.Reptile(task_map=meta.merge_support_query)
    g, _, _ = ablo.hypergradient(MAML, est, THETA, TASK)
    merged = meta.merge_support_query(TASK)
    assert merged["support"][0].shape[0] == 2 * TASK["support"][0].shape[0]
    _, phi_r = maml_objective(THETA, merged)
    assert jnp.allclose(flat(g), flat(THETA) - flat(phi_r), rtol=1e-12, atol=1e-14)
    tasks = jax.vmap(make_task)(jax.random.split(jax.random.PRNGKey(5), 3))
    gb, _, cb = meta.Reptile().estimate_batch(MAML, THETA, tasks, (), jax.random.PRNGKey(0))
    phis = jax.vmap(lambda t: maml_objective(THETA, t)[1])(tasks)
    expected = flat(THETA) - flat(jax.tree_util.tree_map(lambda a: a.mean(0), phis))
    assert jnp.allclose(flat(gb), expected, rtol=1e-10, atol=1e-13)
    assert float(cb.grad_evals) == 3 * R


def test_reptile_rejects_problems_not_in_maml_form():
    with pytest.raises(ValueError, match="reptile needs a MAML-form problem"):
        ablo.hypergradient(ANIL, meta.Reptile(), ANIL_THETA, TASK)
    const = ablo.BilevelProblem(MAML.inner_loss, MAML.outer_loss, ablo.gd(LR), R,
                                init=ablo.constant_init({"w1": jnp.zeros((2, 5)), "b1": jnp.zeros(5),
                                                         "w2": jnp.zeros((5, 1)), "b2": jnp.zeros(1)}))
    with pytest.raises(ValueError, match="reptile needs a MAML-form problem"):
        meta.Reptile().init(const, THETA, TASK)
    with pytest.raises(ValueError, match="task_map"):
        meta.Reptile(task_map=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(apply=None), "apply"),
    (dict(loss="mse"), "loss"),
    (dict(steps=0), "steps"),
    (dict(inner_lr=-1.0), "lr"),
    (dict(optimizer=ablo.gd(0.1)), "optimizer"),
    (dict(optimizer="adam"), "optimizer"),
])
def test_maml_bad_inputs(kwargs, match):
    args = dict(apply=mlp, loss=mse, inner_lr=LR, steps=R)
    with pytest.raises(ValueError, match=match):
        meta.maml(**{**args, **kwargs})


def test_anil_bad_inputs_and_wrong_task_layout():
    with pytest.raises(ValueError, match="features"):
        meta.anil(None, linear_head, mse, 0.1, R)
    with pytest.raises(ValueError, match="head"):
        meta.anil(features, linear_head, mse, 0.1, R).validate({"body": ANIL_THETA["body"]}, TASK)
    with pytest.raises(ValueError, match="inner_loss"):
        MAML.validate(THETA, (TASK["support"], TASK["query"]))  # a tuple, not the support/query dict
