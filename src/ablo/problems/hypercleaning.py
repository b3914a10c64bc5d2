"""Data hypercleaning (Franceschi et al. 2017; Shaban et al. 2019, §4.2.1 and App. G.1;
Likhosherstov et al. 2021, §5.2; Ji et al. 2021, §A.2).

A classifier g(φ, x) (``ablo.models.mlp_apply``: linear for ``sizes = [d, k]``, a ReLU MLP
otherwise) is trained on n examples with possibly corrupted labels ỹ; θ ∈ R^n weighs each
training loss by σ(θ_i); the outer loss is the cross-entropy on a clean validation set:

    L_in(θ, φ)  = (1/n) Σ_i σ(θ_i) l_CE(g(φ, x_i), ỹ_i) + λ Σ_layers ‖W‖_F² (+ ‖b‖² with decay_bias),
    L_out(θ, φ) = (1/n_val) Σ_v l_CE(g(φ, x_v), y_v).

Shaban et al. write the sum over i with 0.001‖W‖_F², W ∈ R^{10×785} holding the bias column;
the mean with λ = 0.001/n and ``decay_bias`` keeps their ratio of data term to regulariser (the
sum itself overshoots with α = 1 on [0, 1] pixels).

A task is a dict ``{"x", "y", "x_val", "y_val"}``; with ``"idx"`` (indices of the rows of ``x``
among the n training examples) the weights are σ(θ[idx]), so a mini-batch task works too; with
``phi0`` None the start is ``task["phi0"]`` (a warm start carried by the caller), else V = φ_0
constant.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from ..inner import InnerOptimizer, gd
from ..models import cross_entropy, mlp_apply
from ..problem import BilevelProblem, constant_init


def weight_decay(phi, bias: bool = False) -> jax.Array:
    """Σ over layers of ‖W‖_F², plus ‖b‖² when ``bias``."""
    return sum(jnp.sum(layer["w"] ** 2) + (jnp.sum(layer["b"] ** 2) if bias else 0.0) for layer in phi)


def make_problem(*, steps: int, inner_lr: float = 1.0, l2: float = 1e-3, phi0=None,
                 optimizer: Optional[InnerOptimizer] = None, decay_bias: bool = False,
                 activation: Callable = jax.nn.relu) -> BilevelProblem:
    """The hypercleaning :class:`BilevelProblem` with r = ``steps`` inner steps of GD at
    ``inner_lr`` (or the given inner ``optimizer``) and regularisation weight λ = ``l2`` on the
    weights (and biases with ``decay_bias``); ``activation`` between an MLP's layers.
    ``phi0``: the model's starting parameters in ``ablo.models.mlp_init`` layout, or None to
    read them from ``task["phi0"]``."""

    def weights(theta, task):
        return jax.nn.sigmoid(theta if "idx" not in task else theta[task["idx"]])

    def inner_loss(theta, phi, task):
        logits = mlp_apply(phi, task["x"], activation=activation)
        return cross_entropy(logits, task["y"], weights(theta, task)) + l2 * weight_decay(phi, decay_bias)

    def outer_loss(theta, phi, task):
        return cross_entropy(mlp_apply(phi, task["x_val"], activation=activation), task["y_val"])

    init = constant_init(phi0) if phi0 is not None else (lambda theta, task: task["phi0"])
    return BilevelProblem(inner_loss, outer_loss, optimizer or gd(inner_lr), steps, init)


def f1_corrupted(theta, corrupted, threshold: float = -3.0) -> jax.Array:
    """F1 score of the rule θ_i < ``threshold`` (σ(θ_i) < σ(−3)) for "label corrupted"
    (Shaban et al. 2019, §4.2.1); NaN when no label is corrupted (nothing to detect: F1 is undefined)."""
    pred = theta < threshold
    tp = jnp.sum(pred & corrupted)
    n_bad = jnp.sum(corrupted)
    return jnp.where(n_bad > 0, 2.0 * tp / jnp.maximum(jnp.sum(pred) + n_bad, 1), jnp.nan)
