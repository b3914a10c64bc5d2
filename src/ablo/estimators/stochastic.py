"""Stochastic implicit hypergradients: stocBiO (Ji et al. 2021 Alg. 2-3, eq. 5-6) and the
single-sample baselines BSA and TTSA (Ji et al. 2021 §A.2).

Data convention. The task is a dataset: a pytree whose parts are pytrees of arrays with a
leading example axis, e.g. ``{"train": (x, y), "val": (x, y)}``. ``inner_part`` and
``outer_part`` name the parts the inner and outer losses read (dict keys or tuple indices;
``None``: the whole task is one part). A loss is evaluated on a mini-batch by handing it the
task with that part replaced by examples drawn uniformly *with replacement* (i.i.d. samples, so
every batch estimate is unbiased for the full-data mean loss); other parts are passed whole,
so each loss must read its own part only. Losses must be means over examples. A loss that
needs the examples' indices (per-example weights θ_i, data hypercleaning) keeps an index array
``jnp.arange(n)`` in its part; it is sliced along with the data.

Counts: every evaluation of ∇_φ G on a batch is one gradient evaluation, every ∇²_φ G·v one
HVP, the mixed ∇_x∇_y G·v also one HVP (as in ``implicit``); ``samples`` is the number of
examples drawn. States held: 1 (all loops are ``lax`` loops; memory does not grow with T or Q).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax
import numpy as np

from ..cost import cost
from .base import Estimator, TwoPass, with_finite_flag
from .implicit import mixed_product
from ..checks import check_above_zero, check_int, is_real

Part = Optional[Union[str, int]]


def _data(task, part: Part, name: str):
    if part is None:
        return task
    try:
        return task[part]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{name}={part!r} does not name a part of the task; the task must be a dict or tuple of "
                         f"datasets (e.g. {{'train': ..., 'val': ...}}), or set {name}=None") from None


def draw(task, part: Part, key, size: int, name: str = "part"):
    """The task with ``task[part]`` replaced by ``size`` examples drawn uniformly with replacement
    (indices = 32 random bits mod n: uniform up to a relative bias below n / 2^32, and cheaper to
    compile inside loops than ``randint``)."""
    data = _data(task, part, name)
    leaves = jax.tree_util.tree_leaves(data)
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every array of the task part {name}={part!r} needs the same leading example axis; "
                         f"got leading sizes {sorted(map(str, sizes))}")
    idx = jax.random.bits(key, (size,), jnp.uint32) % jnp.uint32(sizes.pop())
    batch = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
    if part is None:
        return batch
    if isinstance(task, dict):
        return {**task, part: batch}
    return type(task)(batch if i == part else x for i, x in enumerate(task))


def decaying_sizes(B: int, decay: float, Q: int):
    """Static segments [(size, j_start, j_stop)] of |B_{Q−j}|, j = 0..Q−1 (Ji et al. 2021 §2.2:
    |B_{Q−j}| decays exponentially in j). The decay B·decay^j is quantised to halvings,
    |B_{Q−j}| = ⌈B / 2^{⌊j log2(1/decay)⌋}⌉ (within a factor 2 of B·decay^j, never below 1), so
    there are at most ⌈log2 B⌉ + 1 distinct static batch shapes whatever Q: each segment is one
    ``fori_loop``, and code size and memory stay independent of Q. decay = 1: one segment of B."""
    if decay >= 1.0 or Q == 0:
        return [(B, 0, Q)] if Q else []
    lam = math.log2(1.0 / decay)
    segments, k = [], 0
    while True:
        size = -(-B // 2 ** k)
        j0, j1 = math.ceil(k / lam), math.ceil((k + 1) / lam)
        if size == 1 or j1 >= Q:
            segments.append((size, j0, Q))
            return [s for s in segments if s[1] < s[2]]
        segments.append((size, j0, j1))
        k += 1


class StochasticState(NamedTuple):
    """Warm start y_{k−1}^T (or, for TTSA, the whole inner optimizer state) and the outer step k."""

    inner: object
    step: jax.Array


@dataclass(frozen=True)
class _Stochastic(Estimator):
    inner_part: Part = "train"
    outer_part: Part = "val"
    needs_key: ClassVar[bool] = True

    def hvp(self, problem, theta, phi, task, key, size, v):
        """∇²_φ G(θ, φ; B) v on a fresh batch B of ``size`` examples (one HVP)."""
        batch = draw(task, self.inner_part, key, size, "inner_part")
        return problem.inner_hvp(theta, phi, v, batch)

    def sgd(self, problem, theta, task, s, key, start, stop, size):
        """Inner mini-batch SGD (Ji et al. 2021 Alg. 2 lines 4-7): steps start..stop−1 of the problem's
        optimizer, each on its own batch S_t (``stop`` may be traced)."""
        def body(t, s):
            batch = draw(task, self.inner_part, jax.random.fold_in(key, t), size, "inner_part")
            return problem.step(theta, s, t, batch)

        return jax.lax.fori_loop(start, stop, body, s)

    def outer_grads(self, problem, theta, phi, task, key, size):
        """∇_x F and v_0 = ∇_y F on one batch D_F (one gradient evaluation)."""
        batch = draw(task, self.outer_part, key, size, "outer_part")
        return jax.grad(problem.outer_loss, argnums=(0, 1))(theta, phi, batch)

    def hypergradient(self, problem, theta, phi, task, key, f_theta, v, size):
        """Eq. 6: ∇_x F(D_F) − ∇_x∇_y G(D_G) v on its own batch D_G."""
        batch = draw(task, self.inner_part, key, size, "inner_part")
        return optax.tree.sub(f_theta, mixed_product(problem, theta, phi, batch, v))


@dataclass(frozen=True)
class StocBiO(TwoPass, _Stochastic):
    """stocBiO (Ji et al. 2021 Alg. 2-3). Per call: T = r inner SGD steps on batches of ``inner_batch``
    (warm-started from y_{k−1}^T), v_0 = ∇_y F(D_F), then eq. 5 as Alg. 3 computes it,

        r_Q = v_0,  r_{i−1} = (I − η∇²_y G(B_i)) r_i  (i = Q..1),  v_Q = η Σ_{i=0}^{Q} r_i
            = η Σ_{q=−1}^{Q−1} Π_{j=Q−q}^{Q} (I − η∇²_y G(B_j)) v_0,

    with mutually independent batches B_j, and eq. 6 with the JVP on its own batch D_G.
    ``batch`` is the default size of every batch (stocBiO-B in §A.2); ``inner_batch`` (S),
    ``outer_batch`` (D_F), ``hess_batch`` (B = |B_Q|) and ``jvp_batch`` (D_G) override it.
    ``hess_decay`` < 1 lets |B_{Q−j}| decay exponentially in j (see ``decaying_sizes``).
    Cost: T + 1 gradient evaluations, Q + 1 HVPs, T·S + D_F + Σ_j |B_j| + D_G samples.

    Args:
        inner_part: the task part the inner loss reads (a dict key or tuple index; None: the
            whole task), mini-batches of which are drawn.
        outer_part: the task part the outer loss reads.
        eta: the Neumann step η of eq. 5 (must be < 1/L).
        Q: the number of Neumann terms (HVPs).
        batch: the default size of every batch.
        inner_batch: S, the inner SGD batch size (None: ``batch``).
        outer_batch: D_F, the batch of ∇_y F (None: ``batch``).
        hess_batch: B, the size of the Hessian batches (None: ``batch``).
        jvp_batch: D_G, the batch of the mixed second-derivative product (None: ``batch``).
        hess_decay: the factor ∈ (0, 1] by which the Hessian batches shrink.
        warm_start: start the inner loop from the last call's iterate (the state).

    Example:
        ```python
        est = ablo.StocBiO(eta=0.5, Q=10, batch=100)   # task = {"train": (x, y), "val": (xv, yv)}
        state = est.init(problem, theta, task)
        g, state, cost = ablo.hypergradient(problem, est, theta, task, state=state, key=key)
        ```
    """

    eta: float = 0.5
    Q: int = 10
    batch: int = 100
    inner_batch: Optional[int] = None
    outer_batch: Optional[int] = None
    hess_batch: Optional[int] = None
    jvp_batch: Optional[int] = None
    hess_decay: float = 1.0
    warm_start: bool = True
    name: ClassVar[str] = "stocbio"

    def __post_init__(self):
        check_above_zero("eta", self.eta, " (Neumann step η of eq. 5; it must also be < 1/L)")
        check_int("Q", self.Q, 0)
        check_int("batch", self.batch, 1)
        for name in ("inner_batch", "outer_batch", "hess_batch", "jvp_batch"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if not is_real(self.hess_decay) \
                or not 0 < self.hess_decay <= 1:
            raise ValueError(f"hess_decay must be in (0, 1] (|B_(Q-j)| ~ hess_batch * hess_decay^j); "
                             f"got {self.hess_decay!r}")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"warm_start must be True or False; got {self.warm_start!r}")

    def size(self, name: str) -> int:
        """The batch size option ``name`` (e.g. "hess_batch"), ``batch`` when it is None."""
        value = getattr(self, name)
        return self.batch if value is None else value

    def init(self, problem, theta, task):
        """y_0 = params(s_0) = V(θ, T) as the first warm start, outer step 0."""
        return StochasticState(problem.optimizer.params(problem.initial_state(theta, task)), jnp.asarray(0, jnp.int32))

    def neumann(self, problem, theta, phi, task, key, v0):
        """Alg. 3 over the static segments of batch sizes; returns (v_Q, samples drawn)."""
        r, acc, samples = v0, v0, 0
        for size, j0, j1 in decaying_sizes(self.size("hess_batch"), float(self.hess_decay), self.Q):
            def body(j, c, size=size):
                r, acc = c
                r = jax.tree.map(lambda ri, hi: ri - self.eta * hi, r,
                             self.hvp(problem, theta, phi, task, jax.random.fold_in(key, j), size, r))
                return r, jax.tree.map(jnp.add, acc, r)

            r, acc = jax.lax.fori_loop(j0, j1, body, (r, acc))
            samples += size * (j1 - j0)
        return jax.tree.map(lambda a: self.eta * a, acc), samples

    def forward_pass(self, problem, theta, task, state, key):
        """Alg. 2 of Ji et al. 2021 lines 4-7: T mini-batch SGD steps from the warm start."""
        s0 = problem.optimizer.init(state.inner) if self.warm_start else problem.initial_state(theta, task)
        k_in = jax.random.split(key, 4)[0]
        return self.sgd(problem, theta, task, s0, k_in, 0, problem.steps, self.size("inner_batch")), None

    def backward_pass(self, problem, theta, task, state, key, s_r, residuals):
        """Alg. 2 of Ji et al. 2021 after the inner steps: the Neumann estimate v (Alg. 3,
        eq. 5-6) over independent batches, then ∇_θ f − ∇²_θy g v on one more batch. Cost: T + 1
        gradients, Q + 1 HVPs, the samples drawn."""
        _, k_f, k_h, k_g = jax.random.split(key, 4)
        T, S = problem.steps, self.size("inner_batch")
        phi = problem.optimizer.params(s_r)
        f_theta, v0 = self.outer_grads(problem, theta, phi, task, k_f, self.size("outer_batch"))
        v, hess_samples = self.neumann(problem, theta, phi, task, k_h, v0)
        g = self.hypergradient(problem, theta, phi, task, k_g, f_theta, v, self.size("jvp_batch"))
        samples = T * S + self.size("outer_batch") + hess_samples + self.size("jvp_batch")
        c = cost(grad_evals=T + 1, hvps=self.Q + 1, states=1, samples=samples)
        return g, StochasticState(phi, state.step + 1), with_finite_flag(g, c)

    def expected_cost(self, r):
        """Deterministic: r + 1 gradient evaluations, Q + 1 HVPs, the samples of the docstring."""
        hess = sum(size * (j1 - j0) for size, j0, j1 in
                   decaying_sizes(self.size("hess_batch"), float(self.hess_decay), self.Q))
        samples = r * self.size("inner_batch") + self.size("outer_batch") + hess + self.size("jvp_batch")
        return cost(grad_evals=r + 1, hvps=self.Q + 1, states=1, samples=samples)


def random_neumann(est, problem, theta, phi, task, key, v0):
    """Single-sample Hessian-inverse estimate of BSA/TTSA (Ghadimi & Wang 2018):
    p ~ U{0, …, N−1},  v = ηN Π_{i=1}^{p} (I − η∇²_y G(ξ_i)) v_0,  E v = η Σ_{q=0}^{N−1} (I − η∇²_y g)^q v_0
    (the Neumann series with Q = N − 1). Returns (v, p): p HVPs, p·batch samples; the trip
    count is dynamic, memory constant."""
    k_p, k_h = jax.random.split(key)
    p = jax.random.randint(k_p, (), 0, est.N)

    def body(i, r):
        hv = est.hvp(problem, theta, phi, task, jax.random.fold_in(k_h, i), est.batch, r)
        return jax.tree.map(lambda ri, hi: ri - est.eta * hi, r, hv)

    r = jax.lax.fori_loop(0, p, body, v0)
    return jax.tree.map(lambda x: est.eta * est.N * x, r), p


@dataclass(frozen=True)
class _SingleSample(_Stochastic):
    eta: float = 0.5
    N: int = 10
    batch: int = 1

    def __post_init__(self):
        check_above_zero("eta", self.eta, " (Neumann step η; it must also be < 1/L)")
        check_int("N", self.N, 1)
        check_int("batch", self.batch, 1)

    def implicit_step(self, problem, theta, phi, task, key):
        """∇_x F − ∇_x∇_y G · v with v from ``random_neumann``; returns (g, HVPs, samples)."""
        k_f, k_h, k_g = jax.random.split(key, 3)
        f_theta, v0 = self.outer_grads(problem, theta, phi, task, k_f, self.batch)
        v, p = random_neumann(self, problem, theta, phi, task, k_h, v0)
        g = self.hypergradient(problem, theta, phi, task, k_g, f_theta, v, self.batch)
        return g, p + 1, (p + 2) * self.batch

    def expected_cost(self, r):
        """E over p ~ U{0..N−1}: (N − 1)/2 + 1 HVPs and ((N − 1)/2 + 2)·batch samples for the
        hypergradient, after ``inner_steps(r)`` inner steps (BSA's T_k grows with k: r is its cap,
        so this is the cost once T_k = r; TTSA takes one)."""
        T, p = self.inner_steps_for(r), (self.N - 1) / 2
        return cost(grad_evals=T + 1, hvps=p + 1, states=1, samples=(T + p + 2) * self.batch)


@dataclass(frozen=True)
class BSA(_SingleSample):
    """BSA (Ghadimi & Wang 2018; Ji et al. 2021 §A.2, "single-sample" stochastic AID). Outer step k
    (in the state) runs T_k = min(r, max(1, ⌊t0 (k+1)^power⌋)) warm-started inner SGD steps
    (default ⌊√(k+1)⌋: a growing number, as the method prescribes; the exact growth law and the
    cap r are our choice, Ji et al. 2021 gives none), then one single-sample hypergradient
    (``random_neumann``, batches of ``batch`` = 1). T_k is a dynamic trip count: shapes are
    static and memory does not depend on k or r. Cost: T_k + 1 gradients, p + 1 HVPs.

    Args:
        inner_part: the task part the inner loss reads (a dict key or tuple index; None: the
            whole task), mini-batches of which are drawn.
        outer_part: the task part the outer loss reads.
        eta: the Neumann step η (must be < 1/L).
        N: the single-sample Neumann series draws p ~ U{0..N−1} HVPs.
        batch: the size of every batch (1: single-sample).
        t0: the scale of T_k.
        power: the growth exponent of T_k (>= 0).

    Example:
        ```python
        est = ablo.BSA(eta=0.1, N=10)
        state = est.init(problem, theta, task)   # holds k and the warm-started inner iterate
        g, state, cost = ablo.hypergradient(problem, est, theta, task, state=state, key=key)
        ```
    """

    t0: float = 1.0
    power: float = 0.5
    name: ClassVar[str] = "bsa"
    not_in_solve: ClassVar[str] = ("its inner step count T_k grows with the outer step k held in its state; use "
                                  "ablo.hypergradient_batch with state")

    def __post_init__(self):
        super().__post_init__()
        check_above_zero("t0", self.t0, " (inner steps T_k = t0 (k+1)^power)")
        if not is_real(self.power) or self.power < 0:
            raise ValueError(f"power must be a number >= 0 (inner steps T_k = t0 (k+1)^power); got {self.power!r}")

    def init(self, problem, theta, task):
        """y_0 = params(s_0) = V(θ, T), outer step 0."""
        return StochasticState(problem.optimizer.params(problem.initial_state(theta, task)), jnp.asarray(0, jnp.int32))

    def inner_steps_for(self, r):
        """The largest number of inner steps one call takes for r (BSA: r)."""
        return r

    def inner_steps(self, problem, step):
        """T_k = clip(⌊t0 (k + 1)^power⌋, 1, r): BSA's growing number of inner steps."""
        t = jnp.floor(self.t0 * (step + 1.0) ** self.power).astype(jnp.int32)
        return jnp.clip(t, 1, problem.steps)

    def estimate(self, problem, theta, task, state, key):
        """T_k single-sample SGD steps from the warm start, then the single-sample implicit
        hypergradient (Ghadimi & Wang 2018). Cost: T_k + 1 gradients, the HVPs drawn."""
        k_in, k_g = jax.random.split(key)
        T = self.inner_steps(problem, state.step)
        s = self.sgd(problem, theta, task, problem.optimizer.init(state.inner), k_in, 0, T, self.batch)
        phi = problem.optimizer.params(s)
        g, hvps, samples = self.implicit_step(problem, theta, phi, task, k_g)
        c = cost(grad_evals=T + 1, hvps=hvps, states=1, samples=T * self.batch + samples)
        return g, StochasticState(phi, state.step + 1), with_finite_flag(g, c)


@dataclass(frozen=True)
class TTSA(_SingleSample):
    """TTSA (Hong et al. 2020; Ji et al. 2021 §A.2): two time scales, one single-sample inner step per
    outer step. In Hong et al.'s notation (x outer, y inner):

        y_{k+1} = y_k − β_k h_g^k,   x_{k+1} = x_k − α_k h_f^k,
        β_k = β_0 (k+1)^{−inner_decay},   α_k = α_0 (k+1)^{−outer_decay},   defaults 2/5 and 3/5,

    so α_k/β_k = (k+1)^{−1/5} → 0: y moves on the fast time scale and tracks y*(x_k). (Hong et
    al.'s non-convex analysis sets α ∝ K^{−3/5}, β ∝ K^{−2/5} for a horizon K; the decaying
    (k+1)-powers keep the same exponents without fixing K.) The inner optimizer state is the
    estimator state; call k scales the single-sample gradient h_g^k by (k+1)^{−inner_decay}
    before the problem's optimizer update at t = k, so for ``gd(β_0)`` the inner step is exactly
    β_k. The outer step size belongs to the outer optimizer: build it with
    :meth:`outer_schedule` (``optax.sgd(ttsa.outer_schedule(α_0))`` is Hong et al.'s update). The
    hypergradient h_f^k is taken at (x_k, y_{k+1}) as in BSA. Cost: 2 gradients, p + 1 HVPs.

    Args:
        inner_part: the task part the inner loss reads (a dict key or tuple index; None: the
            whole task), mini-batches of which are drawn.
        outer_part: the task part the outer loss reads.
        eta: the Neumann step η (must be < 1/L).
        N: the single-sample Neumann series draws p ~ U{0..N−1} HVPs.
        batch: the size of every batch (1: single-sample).
        inner_decay: the exponent ∈ [0, 1] of the inner step size β_k.
        outer_decay: the exponent ∈ [0, 1] of the outer step size α_k (see ``outer_schedule``).

    Example:
        ```python
        ttsa = ablo.TTSA(eta=0.1)
        outer_optimizer = optax.sgd(ttsa.outer_schedule(0.01))   # α_k = 0.01 (k+1)^-0.6
        ablo.outer.run(problem, ttsa, outer_optimizer, theta0, sampler, key=key,
                       budget=ablo.Budget(steps=1000))
        ```
    """

    inner_decay: float = 0.4
    outer_decay: float = 0.6
    name: ClassVar[str] = "ttsa"
    not_in_solve: ClassVar[str] = ("its inner iterate is its state, advanced one step per call; use "
                                  "ablo.hypergradient_batch with state")

    def __post_init__(self):
        super().__post_init__()
        for name in ("inner_decay", "outer_decay"):
            value = getattr(self, name)
            if not is_real(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1] (step size ∝ (k+1)^-{name}); got {value!r}")

    def inner_steps_for(self, r):
        """Inner steps per call: TTSA takes one."""
        return 1

    def inner_scale(self, step):
        """β_k / β_0 = (k+1)^{−inner_decay} at outer step k (traced k is fine)."""
        return (jnp.asarray(step, jnp.result_type(float)) + 1.0) ** -self.inner_decay

    def outer_schedule(self, lr: float):
        """The optax schedule α_k = lr · (k+1)^{−outer_decay} of the outer optimizer (k = its update count)."""
        check_above_zero("lr", lr, " (outer step size α_0 of TTSA)")
        return lambda count: lr * (jnp.asarray(count, jnp.result_type(float)) + 1.0) ** -self.outer_decay

    def init(self, problem, theta, task):
        """The inner optimizer state s_0 (the fast iterate), outer step 0. TTSA's inner decay scales
        the gradient handed to the optimizer, which is a step size only for plain GD (Adam would
        undo it, momentum would change its meaning): other inner optimizers are refused."""
        if getattr(problem.optimizer, "name", None) != "gd":
            raise ValueError(f"ttsa: the inner step β_k = β_0 (k+1)^-inner_decay needs the inner optimizer "
                             f"ablo.gd(β_0); got {getattr(problem.optimizer, 'name', problem.optimizer)!r}")
        return StochasticState(problem.initial_state(theta, task), jnp.asarray(0, jnp.int32))

    def estimate(self, problem, theta, task, state, key):
        """One single-sample inner step y_{k+1} = y_k − β_k h_g^k, then the single-sample implicit
        hypergradient at (x_k, y_{k+1}). Cost: 2 gradients, the HVPs drawn."""
        k_in, k_g = jax.random.split(key)
        batch = draw(task, self.inner_part, k_in, self.batch, "inner_part")
        h = problem.inner_grad(theta, problem.optimizer.params(state.inner), batch)
        scale = self.inner_scale(state.step)
        s = problem.optimizer.update(jax.tree.map(lambda x: scale.astype(x.dtype) * x, h), state.inner, theta, state.step)
        phi = problem.optimizer.params(s)
        g, hvps, samples = self.implicit_step(problem, theta, phi, task, k_g)
        c = cost(grad_evals=2, hvps=hvps, states=1, samples=self.batch + samples)
        return g, StochasticState(s, state.step + 1), with_finite_flag(g, c)
