"""The outer loop, paper 000 Alg. 1 (outer SGD), with any optax optimizer:

    for k = 0, 1, ...:  draw T_1..T_n ~ p(T);   G = (1/n) Σ_i G(θ_k, T_i);   θ_{k+1} = θ_k + optax_update(G)

with G any hypergradient estimator (exact, FOM, UFOM, ...). Step k draws its tasks and its
estimator randomness from ``fold_in(key, k)`` alone, so a run resumed from a checkpoint at
step k continues exactly as the uninterrupted run. One jitted function does a whole outer
step (sample the meta-batch with a vmapped ``sampler``, estimate, update) and is compiled
once. The budget is in outer steps, function calls (Σ ``Cost.function_calls``, paper 000 §5)
or seconds, whichever runs out first; a step is started only while every budget has some
left, so the last step may overshoot a call budget by at most one step's cost.

The log's ``outer_loss`` is M^(r)(θ_k; T) = L_out(θ_k, φ_r, T) (``problem.objective``) and
``inner_loss`` is L_in(θ_k, φ_r, T), both averaged over the step's meta-batch at θ_k before the
update; they come from one extra inner run per task that is *not* charged to the budget.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from numbers import Real
from os import PathLike
from typing import Any, Callable, List, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import checkpoint as ckpt
from . import sharding
from .api import NONFINITE_ADVICE, NonFiniteHypergradient
from .cost import is_nonfinite
from .estimators.base import Estimator
from .problem import BilevelProblem


def _is_int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer))


def _positive(name: str, value, integer: bool, optional: bool = True) -> None:
    """ValueError unless ``value`` is an integer >= 1 (``integer``) or a finite real > 0 (None if ``optional``)."""
    if value is None and optional:
        return
    if integer:
        ok = _is_int(value) and value >= 1
    else:
        ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value) and value > 0
    if not ok:
        kind = "an integer >= 1" if integer else "a finite number > 0"
        raise ValueError(f"{name} must be {'None or ' if optional else ''}{kind}; got {value!r}")


@dataclass(frozen=True)
class Budget:
    """Stop after ``steps`` outer steps, ``function_calls`` gradient evaluations + HVPs + JVPs, or
    ``seconds`` of wall time, whichever comes first (None = no limit on that count)."""

    steps: Optional[int] = None
    function_calls: Optional[float] = None
    seconds: Optional[float] = None

    def __post_init__(self):
        _positive("Budget.steps", self.steps, integer=True)
        _positive("Budget.function_calls", self.function_calls, integer=False)
        _positive("Budget.seconds", self.seconds, integer=False)

    def exhausted(self, steps: int, function_calls: float, seconds: float) -> bool:
        return ((self.steps is not None and steps >= self.steps)
                or (self.function_calls is not None and function_calls >= self.function_calls)
                or (self.seconds is not None and seconds >= self.seconds))


class RunResult(NamedTuple):
    theta: Any
    opt_state: Any
    estimator_state: Any
    log: List[dict]
    steps: int
    function_calls: float
    seconds: float
    skipped: int


class Diverged(NonFiniteHypergradient):
    """An outer step produced a non-finite inner loss, outer loss or hypergradient."""

    def __init__(self, message: str, step: int, method: str, checkpoint=None):
        super().__init__(message)
        self.step, self.method, self.checkpoint = step, method, checkpoint


def _check_key(key) -> None:
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise ValueError(f"key must be a PRNG key, jax.random.key(seed) or jax.random.PRNGKey(seed); got {key!r}")
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not (typed and key.shape == () or not typed and key.dtype == np.uint32 and key.shape == (2,)):
        raise ValueError("key must be a single PRNG key, jax.random.key(seed) or jax.random.PRNGKey(seed); "
                         f"got an array of dtype {key.dtype} and shape {key.shape}")


def validate(problem, estimator, optimizer, sampler, key, budget, meta_batch, log_every, eval_fn, eval_every,
             checkpoint_dir, checkpoint_every, resume, on_nonfinite, devices, progress, log_losses=True) -> None:
    """Check every argument of :func:`run` (cheap: no tracing); ValueError names the bad one."""
    if not isinstance(problem, BilevelProblem):
        raise ValueError(f"problem must be an ablo.BilevelProblem; got {type(problem).__name__}")
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be an ablo estimator (e.g. ablo.FOM(), ablo.estimators.get(name)); "
                         f"got {type(estimator).__name__}")
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise ValueError(f"optimizer must be an optax GradientTransformation (e.g. optax.sgd(0.1)); "
                         f"got {type(optimizer).__name__}")
    for name, fn in (("sampler", sampler), ("eval_fn", eval_fn), ("progress", progress)):
        if not (callable(fn) or (fn is None and name != "sampler")):
            raise ValueError(f"{name} must be a function{'' if name == 'sampler' else ' or None'}; got {fn!r}")
    _check_key(key)
    if not isinstance(budget, Budget):
        raise ValueError(f"budget must be an ablo.outer.Budget; got {type(budget).__name__}")
    if budget.steps is None and budget.function_calls is None and budget.seconds is None:
        raise ValueError("budget is unbounded: set Budget(steps=...), function_calls=... or seconds=...")
    _positive("meta_batch", meta_batch, integer=True, optional=False)
    _positive("log_every", log_every, integer=True, optional=False)
    _positive("eval_every", eval_every, integer=True)
    _positive("checkpoint_every", checkpoint_every, integer=True)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, PathLike)):
        raise ValueError(f"checkpoint_dir must be None or a path; got {checkpoint_dir!r}")
    if not isinstance(resume, bool):
        raise ValueError(f"resume must be True or False; got {resume!r}")
    if checkpoint_dir is None and (resume or checkpoint_every is not None):
        raise ValueError("resume and checkpoint_every need checkpoint_dir")
    if not isinstance(log_losses, bool):
        raise ValueError(f"log_losses must be True or False; got {log_losses!r}")
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'skip'; got {on_nonfinite!r}")
    sharding.check_devices(devices, meta_batch)


def _fixed_dtypes(tree):
    """Strip weak types so the step's outputs feed back into the same compiled function."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


@functools.lru_cache(maxsize=4)  # small: the cached closures may hold whole datasets (samplers)
def make_step(problem, estimator, optimizer, sampler, meta_batch: int, mesh=None, log_losses: bool = True):
    """The jitted outer step ``(θ, opt_state, est_state, key, k) -> (θ', opt_state', est_state', metrics)``,
    cached so that runs of one configuration (seeds, a resume) share one compilation."""

    def losses(theta, task):
        phi_r = problem.optimizer.params(problem.run(theta, task))
        return problem.inner_loss(theta, phi_r, task), problem.outer_loss(theta, phi_r, task)

    def step(theta, opt_state, est_state, key, k):
        k_tasks, k_est = jax.random.split(jax.random.fold_in(key, k))
        tasks = jax.vmap(sampler)(jax.random.split(k_tasks, meta_batch))
        if mesh is None:
            g, new_est, c = estimator.estimate_batch(problem, theta, tasks, est_state, k_est)
        else:
            tasks = sharding.shard_tasks(tasks, mesh)
            g, new_est, c = sharding.estimate_batch(estimator, problem, theta, tasks, est_state, k_est, mesh)
        if log_losses:
            l_in, l_out = jax.vmap(losses, in_axes=(None, 0))(theta, tasks)
        else:
            l_in = l_out = jnp.full((1,), jnp.nan)
        updates, new_opt = optimizer.update(g, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        same = lambda new, old: jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), new, old)
        metrics = {"outer_loss": l_out.mean(), "inner_loss": l_in.mean(), "grad_norm": optax.tree.norm(g),
                   "function_calls": c.function_calls,
                   "nonfinite": c.nonfinite | is_nonfinite(g) | (is_nonfinite((l_in, l_out)) if log_losses else False)}
        return same(new_theta, theta), same(new_opt, opt_state), same(new_est, est_state), metrics

    return jax.jit(step)


def run(problem: BilevelProblem, estimator: Estimator, optimizer: optax.GradientTransformation, theta0,
        sampler: Callable, *, key, budget: Budget = Budget(), meta_batch: int = 1, log_every: int = 1,
        eval_fn: Optional[Callable[[Any], Mapping[str, float]]] = None, eval_every: Optional[int] = None,
        checkpoint_dir=None, checkpoint_every: Optional[int] = None, resume: bool = False,
        on_nonfinite: str = "raise", devices: Optional[int] = None, progress=None,
        log_losses: bool = True) -> RunResult:
    """Outer optimization of θ (paper 000 Alg. 1). ``sampler(key) -> task`` must be a pure JAX
    function (it is vmapped); ``optimizer`` any optax transformation.

    Logs (every ``log_every`` steps and at the last) a dict with ``step`` (steps done),
    ``outer_loss``, ``inner_loss``, ``grad_norm``, ``q`` (None if the estimator has none) and the
    estimator's other ``describe_state`` scalars, cumulative ``function_calls``, ``seconds``,
    ``skipped``, and ``eval_fn(θ)``'s metrics every ``eval_every`` steps (at the end only when
    ``eval_every`` is None). ``checkpoint_every`` steps (and at the end) the run state goes to
    ``checkpoint_dir``; ``resume=True`` continues from there (from scratch when there is no
    checkpoint yet). A non-finite step raises :class:`Diverged` after saving the last good state
    (``on_nonfinite="raise"``) or is skipped and counted (``"skip"``: θ and the optimizer and
    estimator states stay, the step's calls are charged). ``devices=N`` shards the meta-batch
    over N devices (:mod:`ablo.sharding`). ``progress(description, total)`` as for experiments.
    ``log_losses=False`` skips the extra inner run that the logged losses cost (they are then
    None): use it when timing cheap estimators. ``seconds`` counts the outer steps only (the first
    one includes compilation), not ``eval_fn`` nor checkpoint writing.
    """
    validate(problem, estimator, optimizer, sampler, key, budget, meta_batch, log_every, eval_fn, eval_every,
             checkpoint_dir, checkpoint_every, resume, on_nonfinite, devices, progress, log_losses)
    estimator.check(problem)
    try:
        task_shape = jax.eval_shape(sampler, key)
    except Exception as e:  # noqa: BLE001 - reported with context
        raise ValueError(f"sampler(key) must be a JAX function of a PRNG key that returns one task; it failed: "
                         f"{type(e).__name__}: {e}") from None
    problem.validate(theta0, task_shape)
    theta0 = _fixed_dtypes(theta0)
    task0 = sampler(key)
    snap = ckpt.Snapshot(theta0, _fixed_dtypes(optimizer.init(theta0)),
                         _fixed_dtypes(estimator.init(problem, theta0, task0)), key)
    if resume:
        restored = ckpt.load(checkpoint_dir, snap)
        if restored is not None:
            if not np.array_equal(restored.key, ckpt.key_data(key)):
                raise ValueError(f"the checkpoint {ckpt.path(checkpoint_dir)} was written by a run with another key "
                                 "(seed); resume with the same key or use another checkpoint directory")
            snap = ckpt.Snapshot(restored.theta, restored.opt_state, restored.estimator_state, key, restored.step,
                                 restored.function_calls, restored.seconds, restored.skipped, restored.log)
    mesh = sharding.task_mesh(devices) if devices is not None and devices > 1 else None
    step_fn = make_step(problem, estimator, optimizer, sampler, meta_batch, mesh, log_losses)
    if progress is None:
        from .experiments import null_progress as progress

    def save():  # one writer when several processes run the same program (jax.distributed)
        return ckpt.save(checkpoint_dir, snap) if jax.process_index() == 0 else ckpt.path(checkpoint_dir)

    with progress(f"outer steps ({estimator.name})", budget.steps) as advance:
        advance(snap.step)
        while not budget.exhausted(snap.step, snap.function_calls, snap.seconds):
            t0 = time.perf_counter()
            theta, opt_state, est_state, m = step_fn(snap.theta, snap.opt_state, snap.estimator_state, key,
                                                     jnp.asarray(snap.step, jnp.int32))
            m = {k: v.item() for k, v in jax.device_get(m).items()}  # waits for the step
            snap.seconds += time.perf_counter() - t0
            if m["nonfinite"] and on_nonfinite == "raise":
                saved = save() if checkpoint_dir is not None else None
                where = f"; the last good state (step {snap.step}) is saved in {saved}" if saved else ""
                raise Diverged(f"outer step {snap.step + 1}: the {estimator.name} hypergradient or the inner/outer "
                               f"loss is not finite (inner loss {m['inner_loss']:.4g}, outer loss "
                               f"{m['outer_loss']:.4g}); likely cause: {NONFINITE_ADVICE}{where}",
                               snap.step + 1, estimator.name, saved)
            if m["nonfinite"]:
                snap.skipped += 1
            else:
                snap.theta, snap.opt_state, snap.estimator_state = theta, opt_state, est_state
            snap.step += 1
            snap.function_calls += m["function_calls"]
            if not log_losses:
                m["outer_loss"] = m["inner_loss"] = None
            done = budget.exhausted(snap.step, snap.function_calls, snap.seconds)
            evaluate = eval_fn is not None and (done or (eval_every is not None and snap.step % eval_every == 0))
            if done or evaluate or snap.step % log_every == 0:
                snap.log.append(_entry(snap, m, estimator, eval_fn if evaluate else None))
            if checkpoint_dir is not None and (done or (checkpoint_every and snap.step % checkpoint_every == 0)):
                save()
            advance(1)
    return RunResult(snap.theta, snap.opt_state, snap.estimator_state, snap.log, snap.step, snap.function_calls,
                     snap.seconds, snap.skipped)


def _entry(snap: ckpt.Snapshot, m: dict, estimator: Estimator, eval_fn) -> dict:
    entry = {"step": snap.step, "outer_loss": m["outer_loss"], "inner_loss": m["inner_loss"],
             "grad_norm": m["grad_norm"], "q": None}
    entry.update({k: float(v) for k, v in estimator.describe_state(snap.estimator_state).items()})
    entry.update(function_calls=snap.function_calls, seconds=snap.seconds, skipped=snap.skipped)
    if eval_fn is not None:
        metrics = eval_fn(snap.theta)
        if not isinstance(metrics, Mapping):
            raise ValueError(f"eval_fn must return a dict of metrics; got {type(metrics).__name__}")
        entry.update({str(k): float(v) for k, v in metrics.items()})
    return entry
