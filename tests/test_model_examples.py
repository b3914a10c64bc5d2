"""The Equinox and Flax examples' hypergradients (jax.grad through ablo.solve) against central finite
differences of M(θ) in float64, and against the explicit API."""

import importlib.util
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import ablo

pytest.importorskip("equinox")
pytest.importorskip("flax")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_against_fd(problem, theta, task, n_directions=2, h=1e-5):
    """jax.grad of L_out(θ, solve(θ)) along random directions vs central differences of M; returns the gradient."""
    assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(theta))
    solver = ablo.solve(problem, ablo.Reverse())
    g = jax.jit(jax.grad(lambda th: problem.outer_loss(th, solver(th, task), task)))(theta)
    flat_g, unravel = jax.flatten_util.ravel_pytree(g)
    M = jax.jit(lambda th: ablo.objective(problem)(th, task))
    for i in range(n_directions):
        v = jax.random.normal(jax.random.PRNGKey(i), flat_g.shape, jnp.float64)
        v = v / jnp.linalg.norm(v)
        theta_of = lambda s: jax.tree_util.tree_map(lambda a, b: a + s * b, theta, unravel(v))
        fd = (M(theta_of(h)) - M(theta_of(-h))) / (2 * h)
        assert abs(float(flat_g @ v) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd))), (float(flat_g @ v), float(fd))
    assert float(jnp.linalg.norm(flat_g)) > 1e-4
    return g


# the MAML variant (θ the whole CNN) compiles for minutes; ANIL runs the same solve path by default
@pytest.mark.parametrize("variant", [pytest.param("maml", marks=pytest.mark.slow), "anil"])
def test_equinox_cnn_hypergradient_matches_finite_differences(variant):
    ex = load("maml_equinox_cnn")
    problem, theta, _ = ex.build(jax.random.PRNGKey(0), ways=3, steps=3, inner_lr=0.5)[variant]
    images = ex.images_by_class().astype(jnp.float64)
    task = ex.sampler(images, ex.TRAIN_CLASSES, 3, 1, 4)(jax.random.PRNGKey(1))
    check_against_fd(problem, theta, task)


def test_flax_nnx_hypergradient_matches_finite_differences():
    ex = load("hyperparameter_flax")
    problem, theta, _ = ex.build(steps=5, dtype=jnp.float64)
    task, _ = ex.digits_task(jnp.float64)
    g = check_against_fd(problem, theta, task)
    explicit = ablo.hypergradient(problem, ablo.Checkpointed(), theta, task)[0]
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(g)[0], jax.flatten_util.ravel_pytree(explicit)[0],
                               rtol=0, atol=1e-10)
