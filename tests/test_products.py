"""merge_products: products sharing a large operand become one product, with the same values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ablo.products import optimize_products as merge_products  # noqa: N813

KEYS = jax.random.split(jax.random.PRNGKey(0), 8)


def n_products(f, *args) -> int:
    return jax.jit(f).lower(*args).as_text().count("stablehlo.dot_general")


def close(a, b, tol=1e-12):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_hvp_of_weighted_softmax_regression_merges_primal_and_tangent_logits():
    X = jax.random.normal(KEYS[0], (400, 30), jnp.float64)
    y = jax.random.randint(KEYS[1], (400,), 0, 5)
    w = jax.random.normal(KEYS[2], (400,), jnp.float64)

    def loss(phi, w):
        logp = jax.nn.log_softmax(X @ phi["W"] + phi["b"])
        return -jnp.sum(jax.nn.sigmoid(w) * jnp.take_along_axis(logp, y[:, None], 1)[:, 0])

    grads = jax.grad(loss, argnums=(0, 1))
    hvp = lambda phi, w, v: jax.jvp(lambda p: grads(p, w), (phi,), (v,))[1]
    phi = {"W": jax.random.normal(KEYS[3], (30, 5), jnp.float64), "b": jnp.zeros(5, jnp.float64)}
    v = {"W": jax.random.normal(KEYS[4], (30, 5), jnp.float64), "b": jnp.ones(5, jnp.float64)}
    close(jax.jit(merge_products(hvp))(phi, w, v), jax.jit(hvp)(phi, w, v))
    # X·W (recomputed primal) and X·v (tangent) become one product; Xᵀ·(…) stays; the dead
    # primal gradient Xᵀ·r is dropped instead of being merged into a live product.
    assert n_products(merge_products(hvp), phi, w, v) == 2
    assert n_products(hvp, phi, w, v) == 3


def test_shared_right_operand_and_vectors():
    X = jax.random.normal(KEYS[0], (300, 200), jnp.float64)
    u, v = jax.random.normal(KEYS[1], (2, 300), jnp.float64)
    f = lambda X, u, v: (u @ X, v @ X, jnp.sin(X) @ u[:200])
    close(merge_products(f)(X, u, v), f(X, u, v))
    assert n_products(merge_products(f), X, u, v) == 2


def test_batch_dimensions():
    A = jax.random.normal(KEYS[0], (4, 300, 50), jnp.float64)
    B, C = jax.random.normal(KEYS[1], (2, 4, 50, 3), jnp.float64)
    f = lambda A, B, C: (jnp.einsum("bij,bjk->bik", A, B), jnp.einsum("bij,bjk->bik", A, C))
    close(merge_products(f)(A, B, C), f(A, B, C))
    assert n_products(merge_products(f), A, B, C) == 1


def test_dependent_products_are_not_merged():
    X = jax.random.normal(KEYS[0], (300, 300), jnp.float64)
    w = jax.random.normal(KEYS[1], (300,), jnp.float64)
    f = lambda X, w: X @ jnp.tanh(X @ w)  # the second product needs the first one's result
    close(merge_products(f)(X, w), f(X, w))
    assert n_products(merge_products(f), X, w) == 2


def test_wide_products_are_left_alone():
    # Stacking two 200×200 operands and two 100×200 results costs more than a second pass over
    # the 100×200 shared operand saves.
    X = jax.random.normal(KEYS[0], (100, 200), jnp.float64)
    B, C = jax.random.normal(KEYS[1], (2, 200, 200), jnp.float64)
    f = lambda X, B, C: (X @ B, X @ C)
    close(merge_products(f)(X, B, C), f(X, B, C))
    assert n_products(merge_products(f), X, B, C) == 2


def test_closed_over_operand_and_pytree_output():
    X = jax.random.normal(KEYS[0], (500, 40), jnp.float64)
    f = lambda ws: {k: X @ w for k, w in ws.items()}
    ws = {"a": jnp.ones((40, 2)), "b": jnp.arange(80.0).reshape(40, 2), "c": -jnp.ones((40, 2))}
    close(jax.jit(merge_products(f))(ws), f(ws))
    assert n_products(merge_products(f), ws) == 1


def test_concrete_leaves_stay_static():
    """A task holding a Python int used as a shape, a string, or a concrete array read by Python
    control flow works as it does under jax.grad, under jit and eagerly."""
    task = {"x": jnp.ones((200, 30)), "k": 3, "name": "toy", "flip": np.array(1.0)}

    def f(w, task):
        sign = -1.0 if task["flip"] > 0 else 1.0  # Python control flow on a concrete array
        return jax.grad(lambda w: sign * jnp.sum(jnp.tile(task["x"] @ w, (task["k"], 1))))(w)

    w = jnp.ones((30, 2))
    close(jax.jit(lambda w: merge_products(f)(w, task))(w), f(w, task))
    close(merge_products(f)(w, task), f(w, task))


def test_narrow_gradient_reads_the_data_along_its_rows():
    """Xᵀ·r (the gradient of X·W, W narrow) is computed as dot(r, X), transposed behind a barrier,
    and the wide MLP-layer gradient is left as JAX emits it."""
    X = jax.random.normal(KEYS[0], (2000, 300), jnp.float64)
    W = jax.random.normal(KEYS[1], (300, 4), jnp.float64)
    g = jax.grad(lambda W, X: jnp.sum(jnp.tanh(X @ W)))
    close(jax.jit(merge_products(g))(W, X), jax.jit(g)(W, X))
    assert "optimization_barrier" in jax.jit(merge_products(g)).lower(W, X).as_text()
    wide = jnp.ones((300, 256), jnp.float64)
    assert "optimization_barrier" not in jax.jit(merge_products(g)).lower(wide, X).as_text()
    # X's rows contracted with X on the left (read against its layout): operands swapped
    swapped = lambda X, r: jax.lax.dot_general(X, r, (((0,), (0,)), ((), ())))
    r = jax.random.normal(KEYS[2], (2000, 4), jnp.float64)
    close(jax.jit(merge_products(swapped))(X, r), swapped(X, r))
    assert "optimization_barrier" in jax.jit(merge_products(swapped)).lower(X, r).as_text()


def test_effects_and_nested_transformations_pass_through():
    """An inner loss with a debug print (an equation with no outputs), a cond, a checkpoint and a
    custom_vjp: the rewritten gradient equals the plain one."""
    @jax.custom_vjp
    def clip_grad(x):
        return x

    clip_grad.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1, 1),))
    X = jax.random.normal(KEYS[0], (400, 20), jnp.float64)

    def loss(w):
        jax.debug.print("traced {}", 1)
        z = jax.checkpoint(lambda v: X @ v)(w)
        z = jax.lax.cond(jnp.sum(z) > 0, jax.nn.relu, lambda a: a, z)
        return jnp.mean(clip_grad(z) ** 2)

    w = jax.random.normal(KEYS[1], (20, 3), jnp.float64)
    close(jax.jit(merge_products(jax.grad(loss)))(w), jax.jit(jax.grad(loss))(w))


def test_estimators_agree_with_and_without_the_rewrite():
    """Reverse, checkpointed and FOM on a weighted softmax regression, float64, vmapped over two
    tasks: the problem's product rewrite changes no estimate beyond rounding."""
    import dataclasses

    import ablo

    X = jax.random.normal(KEYS[0], (2, 300, 40), jnp.float64)
    y = jax.random.randint(KEYS[1], (2, 300), 0, 4)

    def inner(theta, phi, task):
        logp = jax.nn.log_softmax(task[0] @ phi)
        return -jnp.mean(jax.nn.sigmoid(theta) * jnp.take_along_axis(logp, task[1][:, None], 1)[:, 0])

    def outer(theta, phi, task):
        return -jnp.mean(jax.nn.log_softmax(task[0] @ phi)[:, 0]) + 1e-3 * jnp.sum(theta ** 2)

    on = ablo.BilevelProblem(inner, outer, ablo.gd(0.5), 8, ablo.constant_init(jnp.zeros((40, 4), jnp.float64)))
    off = dataclasses.replace(on, rewrite_products=False)
    theta = jax.random.normal(KEYS[2], (300,), jnp.float64)
    for est in (ablo.estimators.Reverse(), ablo.estimators.Checkpointed(), ablo.estimators.FOM()):
        run = lambda p: jax.vmap(lambda t: est.estimate(p, theta, t, None, KEYS[3])[0])((X, y))
        close(jax.jit(lambda: run(on))(), jax.jit(lambda: run(off))(), tol=1e-12)


@pytest.mark.parametrize("dtype, preferred", [(jnp.float64, None), (jnp.float32, jnp.float64), (jnp.int32, None)])
def test_every_orientation_keeps_shape_dtype_and_value(dtype, preferred):
    """Narrow and wide products in all four operand layouts, vectors included, a repeated product
    (merged) and one whose result is transposed (fold guarded): same shapes, dtypes and values."""
    for m, k, n in [(600, 50, 3), (3, 50, 600), (600, 3, 50), (1, 600, 40), (600, 40, 1)]:
        for lhs_t, rhs_t in [(False, False), (False, True), (True, False), (True, True)]:
            a = jax.random.normal(KEYS[0], (k, m) if lhs_t else (m, k)) * 3
            b = jax.random.normal(KEYS[1], (n, k) if rhs_t else (k, n)) * 3
            a, b = a.astype(dtype), b.astype(dtype)
            dn = (((0 if lhs_t else 1,), (1 if rhs_t else 0,)), ((), ()))
            dot = lambda x, y: jax.lax.dot_general(x, y, dn, preferred_element_type=preferred)
            f = lambda a, b: (dot(a, b), dot(a, b * 2), dot(a, b).T)
            for u, v in zip(jax.jit(f)(a, b), jax.jit(merge_products(f))(a, b)):
                assert u.shape == v.shape and u.dtype == v.dtype
                scale = float(np.max(np.abs(np.asarray(u, np.float64))))
                np.testing.assert_allclose(np.asarray(v, np.float64), np.asarray(u, np.float64), rtol=1e-5,
                                           atol=(1e-12 if dtype != jnp.float32 else 1e-5) * scale)
