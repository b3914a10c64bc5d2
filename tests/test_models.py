"""Pure-function models: shapes, the linear special case, MAML-style batch norm, jit/vmap/grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ablo.models import (accuracy, batch_norm, convnet_apply, convnet_init, cross_entropy, mlp_apply,
                         mlp_init)


def test_mlp_linear_case_and_shapes():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (7, 5))
    lin = mlp_init(key, [5, 3])
    np.testing.assert_allclose(mlp_apply(lin, x), x @ lin[0]["w"] + lin[0]["b"], rtol=1e-12)
    net = mlp_init(key, [5, 16, 3])
    assert [p["w"].shape for p in net] == [(5, 16), (16, 3)]
    assert mlp_apply(net, x).shape == (7, 3)


def test_mlp_hidden_layer_is_relu():
    params = [{"w": jnp.eye(2), "b": jnp.zeros(2)}, {"w": jnp.eye(2), "b": jnp.zeros(2)}]
    np.testing.assert_allclose(mlp_apply(params, jnp.array([[-1.0, 2.0]])), [[0.0, 2.0]])


def test_mlp_activation_option():
    params = [{"w": jnp.eye(2), "b": jnp.zeros(2)}, {"w": jnp.eye(2), "b": jnp.zeros(2)}]
    x = jnp.array([[-1.0, 2.0]])
    np.testing.assert_allclose(mlp_apply(params, x, activation=jnp.tanh), jnp.tanh(x), rtol=1e-12)
    with pytest.raises(ValueError, match="activation"):
        mlp_apply(params, x, activation="tanh")


@pytest.mark.parametrize("size,side", [(28, 2), (84, 6), (5, 1)])
def test_convnet_shapes(size, side):
    """Stride-2 SAME convs: 28 → 14 → 7 → 4 → 2 (shapes only: jax.eval_shape computes nothing)."""
    p = convnet_init(jax.random.PRNGKey(0), n_classes=5, image_size=size)
    assert len(p["blocks"]) == 4 and p["blocks"][0]["w"].shape == (3, 3, 1, 64)
    assert p["dense"]["w"].shape == (side * side * 64, 5)
    x = jax.ShapeDtypeStruct((4, size, size), jnp.result_type(float))
    assert jax.eval_shape(convnet_apply, p, x).shape == (4, 5)
    assert jax.eval_shape(convnet_apply, p, jax.ShapeDtypeStruct((4, size, size, 1), jnp.result_type(float))).shape == (4, 5)


def test_batch_norm_uses_batch_statistics():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 3, 4)) * 5 + 2
    y = batch_norm(x, jnp.full(4, 2.0), jnp.full(4, -1.0))
    np.testing.assert_allclose(y.mean((0, 1, 2)), -1.0, atol=1e-6)
    np.testing.assert_allclose(y.std((0, 1, 2)), 2.0, rtol=1e-4)


def test_convnet_output_depends_on_the_rest_of_the_batch():
    """MAML's transductive batch norm: one image's logits change when another image changes."""
    p = convnet_init(jax.random.PRNGKey(0), 3, image_size=8, filters=4, blocks=1)
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 8, 8))
    a = convnet_apply(p, x)
    b = convnet_apply(p, x.at[2].set(0.0))
    assert not np.allclose(a[0], b[0])


def test_convnet_is_pure_jittable_vmappable_differentiable():
    p = convnet_init(jax.random.PRNGKey(0), 3, image_size=8, filters=4, blocks=2)
    xs = jax.random.uniform(jax.random.PRNGKey(1), (2, 5, 8, 8))  # 2 tasks of 5 images
    ys = jnp.array([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]])
    loss = lambda p, x, y: cross_entropy(convnet_apply(p, x), y)
    per_task = jax.jit(jax.vmap(loss, in_axes=(None, 0, 0)))(p, xs, ys)
    np.testing.assert_allclose(per_task, [loss(p, xs[i], ys[i]) for i in range(2)], rtol=1e-10)
    g = jax.grad(lambda p: per_task_mean(loss, p, xs, ys))(p)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(g))
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(p)


def per_task_mean(loss, p, xs, ys):
    return jax.vmap(loss, in_axes=(None, 0, 0))(p, xs, ys).mean()


def test_cross_entropy_and_accuracy():
    logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    y = jnp.array([0, 1])
    np.testing.assert_allclose(cross_entropy(logits, y), -(np.log(0.7) + np.log(0.1)) / 2, rtol=1e-12)
    np.testing.assert_allclose(cross_entropy(logits, y, jnp.array([1.0, 0.0])), -np.log(0.7) / 2, rtol=1e-12)
    assert float(accuracy(logits, y)) == 0.5


def test_bad_sizes():
    with pytest.raises(ValueError, match="sizes"):
        mlp_init(jax.random.PRNGKey(0), [5])
    with pytest.raises(ValueError, match="filters"):
        convnet_init(jax.random.PRNGKey(0), 5, filters=0)
