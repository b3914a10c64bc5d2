"""Small models as pure functions: ``init(key, ...) -> params`` (a pytree) and
``apply(params, x) -> logits``. Parameters are plain dicts and lists, so θ and φ of a
bilevel problem can be these pytrees directly (e.g. MAML's V(θ) = θ).

* :func:`mlp_init`/:func:`mlp_apply` — dense layers with ReLU (or ``activation=``) between them; ``sizes = [d, k]``
  is a linear (multinomial logistic) model, ``[d, h, k]`` the two-layer ReLU net of Likhosherstov et al. 2021,
  §5.2.
* :func:`convnet_init`/:func:`convnet_apply` — the few-shot network of Likhosherstov et al. 2021, §5.3
  (after Finn et al. 2017): ``blocks`` x [3x3 conv, 64 filters, stride 2, "SAME" padding → batch norm →
  ReLU], then a dense layer. Batch norm is MAML's: it always normalises with the statistics of
  the batch it is given (no running averages, so it is a pure function of (params, x)), with a
  learned scale and offset.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from .checks import is_int

BN_EPS = 1e-5


def _check_positive(name, v):
    if not is_int(v) or v < 1:
        raise ValueError(f"{name} must be a positive integer; got {v!r}")


def mlp_init(key, sizes: Sequence[int]) -> list:
    """[{"w": (sizes[i], sizes[i+1]), "b": (sizes[i+1],)}]: He-normal weights, zero biases."""
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least input and output widths; got {list(sizes)}")
    for s in sizes:
        _check_positive("every entry of sizes", s)
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
            for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def linear_init(d: int, k: int, dtype=jnp.float32) -> list:
    """A linear model (multinomial logistic regression) in :func:`mlp_init`'s layout, started at
    W = 0, b = 0 as in Shaban et al. 2019, App. G.1: ``[{"w": (d, k), "b": (k,)}]``."""
    _check_positive("d", d)
    _check_positive("k", k)
    return [{"w": jnp.zeros((d, k), dtype), "b": jnp.zeros(k, dtype)}]


def mlp_apply(params: list, x: jax.Array, *, activation: Callable[[jax.Array], jax.Array] = jax.nn.relu) -> jax.Array:
    """x (n, d) → logits (n, k); ``activation`` (elementwise, default ReLU; e.g. ``jnp.tanh``)
    after every layer but the last."""
    if not callable(activation):
        raise ValueError(f"activation must be an elementwise function such as jax.nn.relu or jnp.tanh; got {activation!r}")
    for layer in params[:-1]:
        x = activation(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _conv_out(n: int, blocks: int) -> int:
    for _ in range(blocks):
        n = -(-n // 2)  # stride 2, SAME padding: ceil(n / 2)
    return n


def convnet_init(key, n_classes: int, image_size: int = 28, in_channels: int = 1, filters: int = 64,
                 blocks: int = 4) -> dict:
    """{"blocks": [{"w": (3, 3, c_in, filters), "scale", "offset": (filters,)}], "dense": {"w", "b"}}."""
    for name, v in (("n_classes", n_classes), ("image_size", image_size), ("in_channels", in_channels),
                    ("filters", filters), ("blocks", blocks)):
        _check_positive(name, v)
    keys = jax.random.split(key, blocks + 1)
    chans = [in_channels] + [filters] * blocks
    conv = [{"w": jax.random.normal(k, (3, 3, c, filters)) * jnp.sqrt(2.0 / (9 * c)),
             "scale": jnp.ones(filters), "offset": jnp.zeros(filters)}
            for k, c in zip(keys[:-1], chans[:-1])]
    flat = _conv_out(image_size, blocks) ** 2 * filters
    dense = {"w": jax.random.normal(keys[-1], (flat, n_classes)) * jnp.sqrt(1.0 / flat), "b": jnp.zeros(n_classes)}
    return {"blocks": conv, "dense": dense}


def batch_norm(x: jax.Array, scale: jax.Array, offset: jax.Array) -> jax.Array:
    """(x − mean) / sqrt(var + ε) · scale + offset, statistics over all axes but the channel."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = x.var(axes)
    return (x - mean) * jax.lax.rsqrt(var + BN_EPS) * scale + offset


def convnet_apply(params: dict, x: jax.Array) -> jax.Array:
    """x (n, h, w) or (n, h, w, c) images → logits (n, n_classes)."""
    if x.ndim == 3:
        x = x[..., None]
    for block in params["blocks"]:
        x = jax.lax.conv_general_dilated(x, block["w"], window_strides=(2, 2), padding="SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(batch_norm(x, block["scale"], block["offset"]))
    x = x.reshape(x.shape[0], -1)
    return x @ params["dense"]["w"] + params["dense"]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean (or ``weights``-weighted mean) categorical cross-entropy of integer ``labels``."""
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]
    return nll.mean() if weights is None else jnp.mean(weights * nll)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction (in [0, 1]) of rows whose largest logit is at the integer label."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)
