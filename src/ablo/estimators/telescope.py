"""Randomized telescopes over truncation lengths (Beatson & Adams 2019, "Efficient optimization of
loops and limits with randomized telescoping sums").

With G_K the K-step truncated reverse estimate (K-RMD, Shaban et al. 2019 eq. 8) and lengths
K_1 < … < K_n = r, the exact hypergradient is the telescoping sum

    G_r = Σ_{i=1}^n Δ_i,   Δ_1 = G_{K_1},   Δ_i = G_{K_i} − G_{K_{i−1}}.

Draw N ∈ {1..n} with probabilities p and weight what was computed so the mean is G_r:

* single sample (``form="single"``):   Ĝ = Δ_N / p_N;
* Russian roulette (``form="roulette"``): Ĝ = Σ_{i ≤ N} Δ_i / P(N ≥ i).

Both need only G_{K_1}, …, G_{K_N}, and these are the successive carries of one reverse sweep
through the last K_N steps (G_K is the carry after K reverse steps, closed with V's Jacobian),
so a draw costs r + 1 gradient evaluations, K_N HVPs and N JVPs of V, and holds K_N states.
The cost record reports these for the drawn N; ``expected_cost`` averages them over p, except
``states``: the largest branch, r, is what a compiled program must be able to hold
(Likhosherstov et al. 2021 §2: the telescope "can save time ... but its maximum memory usage can
still grow to O(r)"). Under ``jit`` the draw is a switch over n branches, each a K-RMD of static
length, so compilation grows with n (n(n+1)/2 reverse scans), never with r. The switch is
:func:`~ablo.estimators.base.switch`: under ``vmap`` over tasks (``estimate_batch``, or a user's
own ``jax.vmap``) each task runs the branch it drew and no other, so the work done is the sum of
the cost records; under ``vmap`` over keys for one task, each length drawn runs once.

For the single-sample form E‖Ĝ‖² = Σ_i ‖Δ_i‖²/p_i and the expected cost is Σ_i p_i C_i, so their
product (Likhosherstov et al. 2021 Prop. 1's criterion) is smallest at p_i ∝ ‖Δ_i‖/√C_i
(Cauchy–Schwarz, as in Beatson & Adams 2019). The default p takes all ‖Δ_i‖ equal, p_i ∝ 1/√C_i with
C_i = r + 1 + K_i; :class:`AdaptiveTelescope` estimates ‖Δ_i‖ online, as Adaptive UFOM
estimates D² and V².
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
import numpy as np

from ..checks import check_number, is_int, is_traced
from ..cost import cost
from .base import Estimator, finish, outer_cotangents, reverse_over, run_storing, switch, v_jvps, with_finite_flag

FORMS = ("single", "roulette")


def doubling(r: int) -> Tuple[int, ...]:
    """1, 2, 4, …, r: the default lengths (n = ⌈log₂ r⌉ + 1)."""
    out, k = [], 1
    while k < r:
        out.append(k)
        k *= 2
    return tuple(out) + (r,)


def parse_lengths(text) -> Optional[Tuple[int, ...]]:
    """Lengths given as a tuple or as text ``"1/4/16/64"`` (the estimator spec's separator is ',')."""
    if text is None or isinstance(text, tuple):
        return text
    if isinstance(text, (list, np.ndarray)):
        return tuple(int(k) for k in text)
    if is_int(text):
        return (text,)
    try:
        return tuple(int(k) for k in str(text).split("/"))
    except ValueError:
        raise ValueError(f"lengths must be increasing integers written K1/K2/.../r (e.g. 1/4/16/64); got {text!r}") from None


def check_lengths(lengths, r: Optional[int] = None) -> None:
    """ValueError unless ``lengths`` strictly increase from >= 0 (and end at r when r is given)."""
    ok = isinstance(lengths, tuple) and len(lengths) > 0 and all(
        is_int(k) for k in lengths)
    ok = ok and lengths[0] >= 0 and all(a < b for a, b in zip(lengths, lengths[1:]))
    if not ok:
        raise ValueError(f"lengths must be strictly increasing integers >= 0 ending at r; got {lengths!r}")
    if r is not None and lengths[-1] != r:
        raise ValueError(f"lengths must end at r = {r} (the exact term) so the telescope's mean is the exact "
                         f"hypergradient; got {lengths!r}")


def branch_costs(lengths, r: int) -> np.ndarray:
    """C_i = r + 1 + K_i: gradient evaluations plus HVPs of a draw that sweeps K_i steps."""
    return np.asarray([r + 1 + k for k in lengths], dtype=float)


def default_probs(lengths, r: int) -> np.ndarray:
    """p_i ∝ 1/√C_i: the single-sample optimum when all ‖Δ_i‖ are equal."""
    w = 1.0 / np.sqrt(branch_costs(lengths, r))
    return w / w.sum()


def sweep(problem, theta, task, lengths, i: int, p, form: str):
    """Branch i of the telescope: K-RMD through the last K_i steps, closing at every K_j, j ≤ i.
    Returns (weighted estimate, ‖Δ_j‖² for all j (0 beyond i), Cost)."""
    r, K, n = problem.steps, lengths[i], len(lengths)
    if K > 0:
        s = problem.run(theta, task, 0, r - K)
        s_r, states = run_storing(problem, theta, task, s, r - K, K)
    else:
        s_r, states = problem.run(theta, task), None
    carry = outer_cotangents(problem, theta, s_r, task)
    survival = jnp.cumsum(p[::-1])[::-1]  # P(N ≥ j)
    est, prev, norms, done = None, None, [], 0
    for j in range(i + 1):
        if lengths[j] > done:
            seg = jax.tree.map(lambda x: x[K - lengths[j]:K - done], states)
            carry = reverse_over(problem, theta, task, seg, r - lengths[j], *carry)
            done = lengths[j]
        g = finish(problem, theta, task, *carry)
        delta = g if prev is None else optax.tree.sub(g, prev)
        norms.append(optax.tree.norm(delta, squared=True))
        if form == "roulette":
            term = optax.tree.scale(1.0 / survival[j], delta)
            est = term if est is None else optax.tree.add(est, term)
        prev = g
    if form == "single":
        est = optax.tree.scale(1.0 / p[i], delta)
    est = jax.tree.map(lambda e, t: e.astype(jnp.result_type(t)), est, theta)
    norms = jnp.stack(norms + [jnp.zeros_like(norms[0])] * (n - i - 1))
    c = cost(grad_evals=r + 1, hvps=K, jvps=(i + 1) * v_jvps(problem, theta, task), states=max(K, 1))
    return est, norms, with_finite_flag(est, c, s_r)


def draw(problem, theta, task, lengths, p, form: str, key):
    """One telescope draw at probabilities p (possibly traced): (Ĝ, N, ‖Δ_j‖² for j ≤ N, Cost)."""
    p = jnp.asarray(p)
    N = jax.random.choice(key, len(lengths), p=p)
    branches = [lambda a, i=i: sweep(problem, a[0], a[1], lengths, i, a[2], form) for i in range(len(lengths))]
    est, norms, c = switch(N, branches, (theta, task, p))
    return est, N, norms, c


def telescope_expected_cost(lengths, p, r: int, form: str):
    """E over N ~ p of (gradient evaluations, HVPs, JVPs); states: the largest length, r."""
    p = np.asarray(p, dtype=float)
    return cost(grad_evals=r + 1, hvps=float(np.dot(p, lengths)), jvps=float(np.dot(p, np.arange(1, len(p) + 1))),
                states=max(max(lengths), 1))


@dataclass(frozen=True)
class Telescope(Estimator):
    """Randomized telescope over K-RMD truncations (Beatson & Adams 2019), unbiased for the exact
    hypergradient. ``lengths`` K_1 < … < K_n = r (default 1, 2, 4, …, r; text ``"1/4/16/64"`` in
    specs), ``probs`` the distribution of N over them (default p_i ∝ 1/√(r + 1 + K_i); may be
    traced), ``form`` ``"single"`` or ``"roulette"``. Memory O(K_N) for the drawn N, O(r) at
    worst."""

    lengths: Optional[tuple] = None
    probs: Optional[tuple] = None
    form: str = "single"
    name: ClassVar[str] = "telescope"
    not_in_solve: ClassVar[str] = ("its estimate runs the inner loop itself (it is not split into the forward and "
                                  "backward passes solve reuses), so solve would pay the forward run twice; use "
                                  "ablo.hypergradient or ablo.hypergradient_batch")
    random_branch: ClassVar[bool] = True
    needs_key: ClassVar[bool] = True
    traced: ClassVar[tuple] = ("probs",)

    def __post_init__(self):
        object.__setattr__(self, "lengths", parse_lengths(self.lengths))
        if self.lengths is not None:
            check_lengths(self.lengths)
        if self.form not in FORMS:
            raise ValueError(f"form must be 'single' or 'roulette'; got {self.form!r}")
        if isinstance(self.probs, str):
            object.__setattr__(self, "probs", tuple(float(v) for v in self.probs.split("/")))
        if self.probs is not None and not any(is_traced(v) for v in jax.tree_util.tree_leaves(self.probs)):
            v = np.asarray(self.probs, dtype=float).ravel()
            check_number("probs", v, 0, 1, lo_open=True, hi_open=False,
                         hint="; every length needs a positive probability or the mean is not exact")
            if abs(v.sum() - 1) > 1e-6:
                raise ValueError(f"probs must sum to 1; got {tuple(v)} (sum {v.sum()})")
            if self.lengths is not None and len(v) != len(self.lengths):
                raise ValueError(f"probs needs one probability per length ({len(self.lengths)}); got {len(v)}")

    def schedule(self, r: int) -> Tuple[int, ...]:
        """The lengths for r inner steps."""
        lengths = doubling(r) if self.lengths is None else tuple(int(k) for k in self.lengths)
        check_lengths(lengths, r)
        return lengths

    def distribution(self, r: int):
        """p over the lengths (an array; traced when ``probs`` is)."""
        lengths = self.schedule(r)
        if self.probs is None:
            return jnp.asarray(default_probs(lengths, r))
        p = jnp.stack([jnp.asarray(v) for v in self.probs]) if isinstance(self.probs, tuple) else jnp.asarray(self.probs)
        if p.shape != (len(lengths),):
            raise ValueError(f"probs needs one probability per length {lengths}; got shape {p.shape}")
        return p

    def check(self, problem):
        self.schedule(problem.steps)

    def estimate(self, problem, theta, task, state, key):
        """One draw: N ~ p, a K-RMD sweep through the last K_N steps, Δ's weighted per ``form``."""
        lengths = self.schedule(problem.steps)
        g, _, _, c = draw(problem, theta, task, lengths, self.distribution(problem.steps), self.form, key)
        return g, state, c

    def expected_cost(self, r):
        """r + 1 gradient evaluations, E[K_N] HVPs, E[N] JVPs; states r (the largest branch)."""
        with jax.ensure_compile_time_eval():
            return telescope_expected_cost(self.schedule(r), np.asarray(self.distribution(r)), r, self.form)


class TelescopeState(NamedTuple):
    """Smoothed ‖Δ_i‖² per length, the number of updates of each, and the p of the last draw."""

    d2_sm: jax.Array
    k_upd: jax.Array
    probs: jax.Array


@dataclass(frozen=True)
class AdaptiveTelescope(Estimator):
    """Single-sample telescope whose p is tuned online (after Beatson & Adams 2019), in the manner of
    Adaptive UFOM (Likhosherstov et al. 2021 eq. 22-24): every draw observes ‖Δ_j‖² for all j ≤ N
    (the same sweep), updates D²_j ← β D²_j + (1 − β)‖Δ_j‖², and the next draw uses

        p_i ∝ max(√(D̂²_i / C_i), floor),   D̂²_i = D²_i / (1 − β^{k_i}),

    the minimiser of E‖Ĝ‖² · E[cost]; a length never observed yet takes the largest D̂² seen (so it
    is explored), and p_i ≥ ``p_min`` after normalisation. The first draw uses the default p.
    p depends on earlier draws only, so every draw is unbiased given the past.

    Single sample only (``form="single"``, the one value accepted): the Russian-roulette form's
    E‖Ĝ‖² = Σ_{i,j} ⟨Δ_i, Δ_j⟩ / P(N ≥ min(i, j)) couples the Δ's through the survival
    probabilities and its minimiser has no closed form; tune it by hand with
    ``Telescope(form="roulette", probs=...)``."""

    lengths: Optional[tuple] = None
    beta: float = 0.9
    p_min: float = 0.02
    form: str = "single"
    name: ClassVar[str] = "adaptive-telescope"
    random_branch: ClassVar[bool] = True
    needs_key: ClassVar[bool] = True
    traced: ClassVar[tuple] = ("beta", "p_min")
    not_in_solve: ClassVar[str] = ("its probabilities come from statistics carried from call to call; use the explicit "
                                  "API (ablo.hypergradient_batch with state), or telescope with probs you choose")

    def __post_init__(self):
        object.__setattr__(self, "lengths", parse_lengths(self.lengths))
        if self.lengths is not None:
            check_lengths(self.lengths)
        check_number("beta (smoothing constant)", self.beta, 0, 1, lo_open=True)
        check_number("p_min", self.p_min, 0, 0.5, lo_open=True)
        if self.form != "single":
            raise ValueError(f"form must be 'single' for adaptive-telescope (its online p_i ∝ √(D²_i / C_i) is the "
                             f"single-sample optimum); got {self.form!r}. For the Russian-roulette form use "
                             f"telescope with form='roulette' and the probs you choose")

    def schedule(self, r):
        """The lengths for r inner steps (``Telescope.schedule``)."""
        return Telescope(lengths=self.lengths).schedule(r)

    def check(self, problem):
        self.schedule(problem.steps)
        if self.lengths is not None and not is_traced(self.p_min) and self.p_min * len(self.lengths) > 1:
            raise ValueError(f"p_min * (number of lengths) must be <= 1; got p_min={self.p_min} with {len(self.lengths)}")

    def init(self, problem, theta, task):
        """No statistics; p the default 1/√C_i."""
        lengths = self.schedule(problem.steps)
        n = len(lengths)
        dt = jnp.result_type(float)
        return TelescopeState(jnp.zeros(n, dt), jnp.zeros(n, jnp.int32),
                              jnp.asarray(default_probs(lengths, problem.steps), dt))

    def probs_of(self, state: TelescopeState, r: int) -> jax.Array:
        """p_i ∝ √(D̂²_i / C_i), unseen lengths at the largest D̂², floored at p_min; default p before
        any statistics."""
        lengths = self.schedule(r)
        seen = state.k_upd > 0
        corr = jnp.where(seen, 1.0 - self.beta ** state.k_upd.astype(state.d2_sm.dtype), 1.0)
        d2 = jnp.where(seen, state.d2_sm / corr, 0.0)
        d2 = jnp.where(seen, d2, jnp.max(d2))
        w = jnp.sqrt(d2 / jnp.asarray(branch_costs(lengths, r), d2.dtype))
        total = jnp.sum(w)
        w = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), state.probs)
        p = jnp.maximum(w, self.p_min)
        return jnp.where(jnp.any(seen), p / p.sum(), state.probs).astype(state.d2_sm.dtype)

    def estimate(self, problem, theta, task, state, key):
        """One single-sample draw at the current p, then the ‖Δ_j‖² statistics of j ≤ N updated."""
        lengths = self.schedule(problem.steps)
        p = self.probs_of(state, problem.steps)
        g, N, norms, c = draw(problem, theta, task, lengths, p, "single", key)
        seen = jnp.arange(len(lengths)) <= N
        b = self.beta
        new = TelescopeState(jnp.where(seen, b * state.d2_sm + (1 - b) * norms, state.d2_sm).astype(state.d2_sm.dtype),
                             state.k_upd + seen.astype(jnp.int32), p)
        return g, new, c

    def expected_cost(self, r, probs=None):
        """The expected cost at p = ``probs`` (default: the first draw's, 1/√C_i)."""
        lengths = self.schedule(r)
        p = default_probs(lengths, r) if probs is None else np.asarray(probs, dtype=float)
        return telescope_expected_cost(lengths, p, r, "single")

    def describe_state(self, state):
        return {f"p{i}": float(v) for i, v in enumerate(state.probs)}
