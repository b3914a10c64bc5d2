"""The outer loop, Likhosherstov et al. 2021 Alg. 1 (outer SGD), with any optax optimizer:

    for k = 0, 1, ...:  draw T_1..T_n ~ p(T);   G = (1/n) Σ_i G(θ_k, T_i);   θ_{k+1} = θ_k + optax_update(G)

with G any hypergradient estimator (exact, FOM, UFOM, ...). Step k draws its tasks and its
estimator randomness from ``fold_in(key, k)`` alone, so a run resumed from a checkpoint at
step k continues exactly as the uninterrupted run.

The loop is two pure functions and a driver:

* :func:`init` ``(problem, estimator, optimizer, θ_0, task) -> OuterState``;
* :func:`make_step` ``(...) -> step(state, key) -> (state, metrics)``: one whole outer step
  (sample the meta-batch with a vmapped ``sampler``, estimate, update), pure, so it can be
  jitted, scanned (many steps in one call) or vmapped (many seeds, many θ_0, many traced
  hyperparameters at once). A step whose hypergradient, losses, new θ or new optimizer state is
  not finite (an overflow inside Adam's moments, a norm that overflows included) leaves θ and
  both optimizer states as they were and says why in ``metrics``;
* :func:`run`, the driver: budgets, logging, evaluation, checkpoints, resume, divergence, with
  its options grouped in small frozen values (:class:`Budget`; :class:`Options` holding
  :class:`Evaluation`, :class:`Checkpointing` and :class:`Progress`), each checking itself when
  built. The budget is in outer steps, function calls (Σ ``Cost.function_calls``, Likhosherstov
  et al. 2021 §5) or seconds, whichever runs out first; a step is started only while every budget
  has some left, so the last step may overshoot a call budget by at most one step's cost. The
  run's Cost is carried in the state (one counter).

The log's ``outer_loss`` is M^(r)(θ_k; T) = L_out(θ_k, φ_r, T) (``problem.objective``) and
``inner_loss`` is L_in(θ_k, φ_r, T), both averaged over the step's meta-batch at θ_k before the
update; they come from one extra inner run per task that is *not* charged to the budget.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import time
from dataclasses import dataclass
from os import PathLike
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import checkpoint as ckpt
from . import sharding
from .api import NONFINITE_ADVICE, NonFiniteHypergradient
from .checks import check_key, check_positive
from . import cost as cost_lib
from .cost import Cost, is_nonfinite
from .estimators.base import Estimator
from .problem import BilevelProblem


@dataclass(frozen=True)
class Budget:
    """Stop after ``steps`` outer steps, ``function_calls`` gradient evaluations + HVPs + JVPs, or
    ``seconds`` of wall time, whichever comes first (None = no limit on that count).

    Args:
        steps: the most outer steps, an integer >= 1, or None.
        function_calls: the most function calls (Σ ``Cost.function_calls``), > 0, or None.
        seconds: the most seconds of outer-step time (compilation excluded), > 0, or None.

    Example:
        ```python
        ablo.Budget(steps=1000, function_calls=12_000)   # whichever runs out first
        ```
    """

    steps: Optional[int] = None
    function_calls: Optional[float] = None
    seconds: Optional[float] = None

    def __post_init__(self):
        check_positive("Budget.steps", self.steps, integer=True)
        check_positive("Budget.function_calls", self.function_calls, integer=False)
        check_positive("Budget.seconds", self.seconds, integer=False)

    def exhausted(self, steps: int, function_calls: float, seconds: float) -> bool:
        """True when any of the counts given has reached its limit."""
        return ((self.steps is not None and steps >= self.steps)
                or (self.function_calls is not None and function_calls >= self.function_calls)
                or (self.seconds is not None and seconds >= self.seconds))


@dataclass(frozen=True)
class Evaluation:
    """When :func:`run` evaluates θ: ``fn(θ)`` or ``fn(θ, state)`` (the :class:`OuterState`, e.g. to
    read the inner iterate an estimator carries) returning a dict of metrics, every ``every`` outer
    steps or every ``every_calls`` function calls (one of them; at the end only when both are None).

    Example:
        ```python
        ablo.outer.Evaluation(lambda theta: {"test_acc": accuracy(theta)}, every=20)
        ```
    """

    fn: Optional[Callable[..., Mapping[str, float]]] = None
    every: Optional[int] = None
    every_calls: Optional[float] = None

    def __post_init__(self):
        if self.fn is not None and not callable(self.fn):
            raise ValueError(f"Evaluation.fn must be a function or None; got {self.fn!r}")
        check_positive("Evaluation.every", self.every, integer=True)
        check_positive("Evaluation.every_calls", self.every_calls, integer=False)
        if self.every is not None and self.every_calls is not None:
            raise ValueError("give Evaluation.every (outer steps) or Evaluation.every_calls (function calls), not both")


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often :func:`run` saves its state (every ``every`` steps, and always at the end,
    on divergence and on Ctrl-C), whether it resumes from ``directory`` (from scratch when there is
    no checkpoint yet) and ``on_resume(step)``, called with the step it continues from.

    Example:
        ```python
        ablo.outer.Checkpointing("runs/mine/checkpoints", every=50, resume=True)
        ```
    """

    directory: Union[str, PathLike]
    every: Optional[int] = None
    resume: bool = False
    on_resume: Optional[Callable[[int], None]] = None

    def __post_init__(self):
        if not isinstance(self.directory, (str, PathLike)):
            raise ValueError(f"Checkpointing.directory must be a path; got {self.directory!r}")
        check_positive("Checkpointing.every", self.every, integer=True)
        if not isinstance(self.resume, bool):
            raise ValueError(f"Checkpointing.resume must be True or False; got {self.resume!r}")
        if self.on_resume is not None and not callable(self.on_resume):
            raise ValueError(f"Checkpointing.on_resume must be a function or None; got {self.on_resume!r}")


@dataclass(frozen=True)
class Progress:
    """What :func:`run` logs and shows: a log entry every ``log_every`` steps (and at the last);
    ``losses=False`` skips the extra inner run per task that the logged losses cost (they are then
    None); ``bar(description, total)`` returns a context manager yielding ``advance(n)`` (a progress
    bar); ``label`` (default the estimator's name) names the run in the bar and in messages.

    Example:
        ```python
        ablo.outer.Progress(log_every=10, label="ufom seed 0")
        ```
    """

    log_every: int = 1
    losses: bool = True
    bar: Optional[Callable] = None
    label: Optional[str] = None

    def __post_init__(self):
        check_positive("Progress.log_every", self.log_every, integer=True, optional=False)
        if not isinstance(self.losses, bool):
            raise ValueError(f"Progress.losses must be True or False; got {self.losses!r}")
        if self.bar is not None and not callable(self.bar):
            raise ValueError(f"Progress.bar must be a function or None; got {self.bar!r}")
        if self.label is not None and not isinstance(self.label, str):
            raise ValueError(f"Progress.label must be a string or None; got {self.label!r}")


@dataclass(frozen=True)
class Options:
    """Everything of :func:`run` besides the problem, the method and the budget: ``meta_batch``
    tasks per outer step, ``evaluation``, ``checkpoint`` (None: no checkpoints), ``progress``,
    ``on_nonfinite`` (``"raise"``: a non-finite step raises :class:`Diverged` after saving the last
    good state; ``"skip"``: it is skipped and counted, its calls charged) and ``devices`` (shard the
    meta-batch over N devices, :mod:`ablo.sharding`).

    Example:
        ```python
        ablo.outer.Options(meta_batch=4, evaluation=ablo.outer.Evaluation(evaluate, every=20))
        ```
    """

    meta_batch: int = 1
    evaluation: Evaluation = Evaluation()
    checkpoint: Optional[Checkpointing] = None
    progress: Progress = Progress()
    on_nonfinite: str = "raise"
    devices: Optional[int] = None

    def __post_init__(self):
        check_positive("Options.meta_batch", self.meta_batch, integer=True, optional=False)
        for name, kind in (("evaluation", Evaluation), ("progress", Progress)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"Options.{name} must be an ablo.outer.{kind.__name__}; "
                                 f"got {type(getattr(self, name)).__name__}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, Checkpointing):
            raise ValueError(f"Options.checkpoint must be None or an ablo.outer.Checkpointing; "
                             f"got {type(self.checkpoint).__name__}")
        if self.on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"Options.on_nonfinite must be 'raise' or 'skip'; got {self.on_nonfinite!r}")
        sharding.check_devices(self.devices, self.meta_batch)


class RunResult(NamedTuple):
    """What :func:`run` returns: the final θ and optimizer/estimator states, the log, the outer
    steps done, the function calls spent, the seconds of outer-step time (compilation excluded),
    the steps skipped as non-finite, the seconds spent compiling the step, the whole
    :class:`~ablo.cost.Cost` record of the run (counts summed, ``states`` the most held at once)
    and, when the run stopped before its budget, why (``stopped``, else "").

    Attributes:
        theta: the final θ.
        opt_state: the outer optax optimizer's final state.
        estimator_state: the estimator's final state.
        log: one dict per logged step (outer and inner loss, hypergradient norm, q, calls, seconds).
        steps: outer steps done.
        function_calls: function calls spent (``cost["function_calls"]``).
        seconds: seconds of outer-step time, compilation excluded.
        skipped: steps skipped as non-finite.
        compile_seconds: seconds spent compiling the step.
        cost: the whole Cost record of the run (:data:`COST_FIELDS` and ``function_calls``).
        stopped: why the run stopped before its budget, else "".
    """

    theta: Any
    opt_state: Any
    estimator_state: Any
    log: List[dict]
    steps: int
    function_calls: float
    seconds: float
    skipped: int
    compile_seconds: float = 0.0
    cost: Optional[dict] = None
    stopped: str = ""

    def record(self) -> dict:
        """The run's fields of a result row: steps, every Cost field, function calls, seconds,
        compile seconds, skipped steps and why it stopped early (None when it did not)."""
        return {"steps": self.steps, **(self.cost or {}), "function_calls": self.function_calls,
                "seconds": self.seconds, "compile_seconds": self.compile_seconds, "skipped": self.skipped,
                "stopped": self.stopped or None}


#: The Cost fields a run reports (``RunResult.cost``, the experiments' rows and summary.json).
COST_FIELDS = ("grad_evals", "hvps", "jvps", "states", "samples")
#: A run stops after this many outer steps in a row with a hypergradient that is exactly 0: nothing
#: is left to learn from (θ saturated, e.g. σ(θ_i) at 0 or 1 in float precision, or an estimator
#: that does not see θ, as FOM where V and L_out do not depend on it). Deterministic estimators only:
#: a random one (UFOM, Adaptive UFOM) draws FOM's 0 on most steps of such a problem and still learns.
SATURATED_STEPS = 5


class OuterState(NamedTuple):
    """The carry of the outer loop: θ_k, the optax state, the estimator state, k (int32), the
    run's :class:`~ablo.cost.Cost` so far (the one call counter: ``cost.function_calls``), the
    low-order part of that compensated sum (:func:`ablo.cost.accumulate`) and the steps skipped
    as non-finite."""

    theta: Any
    opt_state: Any
    estimator_state: Any
    step: jax.Array
    cost: Cost
    cost_residual: Cost
    skipped: jax.Array


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`: the last completed step ``step`` is checkpointed (when a
    checkpoint directory was given) so that ``resume=True`` continues from there."""

    def __init__(self, step: int, checkpoint=None):
        super().__init__(f"interrupted after outer step {step}")
        self.step, self.checkpoint = step, checkpoint


class Diverged(NonFiniteHypergradient):
    """An outer step produced a non-finite inner loss, outer loss, hypergradient (or norm), θ or
    optimizer state; ``step``, ``method`` and ``cause`` say which, ``checkpoint`` where the last
    good state was saved (or None)."""

    def __init__(self, message: str, step: int, method: str, checkpoint=None, cause: str = ""):
        super().__init__(message)
        self.step, self.method, self.checkpoint, self.cause = step, method, checkpoint, cause


def _check_key(key) -> None:
    if key is None:
        raise ValueError("key must be a PRNG key, jax.random.key(seed) or jax.random.PRNGKey(seed); got None")
    check_key(key)


def validate(problem, estimator, optimizer, sampler, key, budget, options) -> None:
    """Check the arguments of :func:`run` (cheap: no tracing; the option values check themselves
    when built); ValueError names the bad one."""
    if not isinstance(problem, BilevelProblem):
        raise ValueError(f"problem must be an ablo.BilevelProblem; got {type(problem).__name__}")
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be an ablo estimator (e.g. ablo.FOM(), ablo.estimators.get(name)); "
                         f"got {type(estimator).__name__}")
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise ValueError(f"optimizer must be an optax GradientTransformation (e.g. optax.sgd(0.1)); "
                         f"got {type(optimizer).__name__}")
    if not callable(sampler):
        raise ValueError(f"sampler must be a function; got {sampler!r}")
    _check_key(key)
    if not isinstance(budget, Budget):
        raise ValueError(f"budget must be an ablo.Budget; got {type(budget).__name__}")
    if budget.steps is None and budget.function_calls is None and budget.seconds is None:
        raise ValueError("budget is unbounded: set Budget(steps=...), function_calls=... or seconds=...")
    if not isinstance(options, Options):
        raise ValueError(f"options must be an ablo.outer.Options; got {type(options).__name__}")


def _fixed_dtypes(tree):
    """Strip weak types so the step's outputs feed back into the same compiled function."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


#: What to try when a step is not finite, by cause.
OUTER_ADVICE = ("the outer update overflowed: lower the outer step size (the optax optimizer's learning rate) or "
                "clip the hypergradient (optax.clip_by_global_norm)")


def advice(cause: str) -> str:
    """The likely cause of a non-finite ``cause`` (an entry of :data:`CAUSES`) and what to try."""
    return OUTER_ADVICE if cause in ("theta", "opt_state") else NONFINITE_ADVICE


def init(problem: BilevelProblem, estimator: Estimator, optimizer: optax.GradientTransformation, theta0,
         task) -> OuterState:
    """The outer state at k = 0; ``task`` is one task (e.g. ``sampler(key)``) for the estimator's
    state (AID's warm start, ...)."""
    theta0 = _fixed_dtypes(theta0)
    return OuterState(theta0, _fixed_dtypes(optimizer.init(theta0)),
                      _fixed_dtypes(estimator.init(problem, theta0, task)),
                      jnp.asarray(0, jnp.int32), cost_lib.zero(), cost_lib.zero(), jnp.asarray(0, jnp.int32))


#: The causes of a non-finite step, in the order they are reported.
CAUSES = ("inner_loss", "outer_loss", "hypergradient", "grad_norm", "theta", "opt_state", "estimator_state")


def make_step(problem, estimator, optimizer, sampler, meta_batch: int = 1, mesh=None, log_losses: bool = True):
    """The pure outer step ``step(state: OuterState, key) -> (state, metrics)`` of Likhosherstov et al. 2021
    Alg. 1: draw the meta-batch from ``fold_in(key, k)``, estimate, apply the optax update.

    ``metrics``: ``outer_loss``, ``inner_loss`` (M^(r) and L_in at θ_k, from one extra inner run
    per task that is not charged; NaN when ``log_losses`` is False), ``grad_norm``,
    ``function_calls`` of the run so far (read from ``state.cost``, the one counter), ``nonfinite``
    and one ``bad_<cause>`` flag per entry of :data:`CAUSES`. A non-finite step keeps θ and both
    optimizer states (k still advances and its calls are charged)."""

    def losses(theta, task):
        phi_r = problem.optimizer.params(problem.run(theta, task))
        return problem.inner_loss(theta, phi_r, task), problem.outer_loss(theta, phi_r, task)

    def step(state: OuterState, key):
        theta, opt_state, est_state = state.theta, state.opt_state, state.estimator_state
        k_tasks, k_est = jax.random.split(jax.random.fold_in(key, state.step))
        tasks = jax.vmap(sampler)(jax.random.split(k_tasks, meta_batch))
        if mesh is None:
            g, new_est, c = estimator.estimate_batch(problem, theta, tasks, est_state, k_est)
        else:
            tasks = sharding.shard_tasks(tasks, mesh)
            g, new_est, c = sharding.estimate_batch(estimator, problem, theta, tasks, est_state, k_est, mesh)
        if log_losses:
            l_in, l_out = jax.vmap(losses, in_axes=(None, 0))(theta, tasks)
            l_in, l_out = l_in.mean(), l_out.mean()
        else:
            l_in = l_out = jnp.asarray(jnp.nan, jnp.float32)
        updates, new_opt = optimizer.update(g, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        same = optax.tree.cast_like
        new_theta, new_opt, new_est = same(new_theta, theta), same(new_opt, opt_state), same(new_est, est_state)
        grad_norm = optax.tree.norm(g)
        bad = {"inner_loss": is_nonfinite(l_in) if log_losses else jnp.asarray(False),
               "outer_loss": is_nonfinite(l_out) if log_losses else jnp.asarray(False),
               "hypergradient": is_nonfinite(g) | c.nonfinite, "grad_norm": is_nonfinite(grad_norm),
               "theta": is_nonfinite(new_theta), "opt_state": is_nonfinite(new_opt),
               "estimator_state": is_nonfinite(new_est)}
        nonfinite = functools.reduce(jnp.logical_or, bad.values())
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(nonfinite, b, a), new, old)
        total, residual = same(cost_lib.accumulate(state.cost, state.cost_residual, c), (state.cost, state.cost_residual))
        new_state = OuterState(keep(new_theta, theta), keep(new_opt, opt_state), keep(new_est, est_state),
                               state.step + 1, total, residual, state.skipped + nonfinite.astype(jnp.int32))
        metrics = {"outer_loss": l_out, "inner_loss": l_in, "grad_norm": grad_norm,
                   "function_calls": total.function_calls, "nonfinite": nonfinite,
                   **{f"bad_{k}": v for k, v in bad.items()}}
        return new_state, metrics

    return step


@functools.lru_cache(maxsize=4)  # small: the cached closures may hold whole datasets (samplers)
def _compiled_step(problem, estimator, optimizer, sampler, meta_batch: int, mesh, log_losses: bool):
    """The jitted :func:`make_step`, cached so that runs of one configuration (seeds, a resume)
    share one compilation."""
    return jax.jit(make_step(problem, estimator, optimizer, sampler, meta_batch, mesh, log_losses))


@contextlib.contextmanager
def _no_progress(description: str, total):
    yield lambda n=1: None


def eval_key(key, step: int):
    """The key of an evaluation after ``step`` outer steps of a run started from ``key``, apart
    from the keys of the steps themselves (for an ``eval_fn(θ, state)`` that draws an estimate)."""
    return jax.random.fold_in(jax.random.split(key)[1], step)


def _eval_takes_state(eval_fn) -> bool:
    """True when ``eval_fn`` takes (θ, state) rather than θ alone."""
    try:
        params = [p for p in inspect.signature(eval_fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


def run(problem: BilevelProblem, estimator: Estimator, optimizer: optax.GradientTransformation, theta0,
        sampler: Callable, *, key, budget: Budget, options: Options = Options()) -> RunResult:
    """Outer optimization of θ (Likhosherstov et al. 2021 Alg. 1) by :func:`make_step` until
    ``budget`` runs out. ``sampler(key) -> task`` must be a pure JAX function (it is vmapped);
    ``optimizer`` any optax transformation; ``options`` (:class:`Options`) the meta-batch,
    evaluation, checkpoints, progress, non-finite policy and devices.

    Logs (every ``options.progress.log_every`` steps and at the last) a dict with ``step`` (steps
    done), ``outer_loss``, ``inner_loss``, ``grad_norm``, ``q`` (None if the estimator has none)
    and the estimator's other ``describe_state`` scalars, cumulative ``function_calls``,
    ``seconds``, ``skipped``, and the evaluation's metrics when it is due (:class:`Evaluation`).
    With ``options.checkpoint`` (:class:`Checkpointing`) the run state is saved every
    ``checkpoint.every`` steps, at the end, on divergence and on Ctrl-C, and ``resume=True``
    continues from there; the checkpoint stores a :func:`ablo.checkpoint.fingerprint` of the
    estimator, problem and optimizer, and a checkpoint written for others is refused. A
    non-finite step raises :class:`Diverged` naming the step, the method and the cause after
    saving the last good state (``on_nonfinite="raise"``) or is skipped and counted (``"skip"``).
    Ctrl-C (or SIGTERM, where the caller maps it to KeyboardInterrupt) raises
    :class:`Interrupted` after saving. A deterministic estimator whose hypergradient is exactly 0
    for :data:`SATURATED_STEPS` steps in a row stops there (``RunResult.stopped`` says so).

    The run's :class:`~ablo.cost.Cost` is carried in the :class:`OuterState` (one counter, read by
    the budget, the log and ``RunResult.cost``). The step is compiled before the clock starts:
    ``seconds`` counts outer steps only, not compilation (``compile_seconds``), evaluation nor
    checkpoint writing.

    Example:
        ```python
        result = ablo.outer.run(problem, ablo.UFOM(q=0.1), optax.adam(1e-2), theta0, sampler,
                                key=jax.random.key(0), budget=ablo.Budget(function_calls=10_000),
                                options=ablo.outer.Options(meta_batch=4))
        ```
    """
    validate(problem, estimator, optimizer, sampler, key, budget, options)
    evaluation, checkpoint, shown = options.evaluation, options.checkpoint, options.progress
    estimator.check(problem)
    try:
        task_shape = jax.eval_shape(sampler, key)
    except Exception as e:  # noqa: BLE001 - reported with context
        raise ValueError(f"sampler(key) must be a JAX function of a PRNG key that returns one task; it failed: "
                         f"{type(e).__name__}: {e}") from None
    problem.validate(theta0, task_shape)
    state0 = init(problem, estimator, optimizer, theta0, sampler(key))
    directory = checkpoint.directory if checkpoint is not None else None
    fingerprint = ckpt.fingerprint(problem, estimator, optimizer) if directory is not None else None
    snap = ckpt.Snapshot(state0.theta, state0.opt_state, state0.estimator_state, key, fingerprint=fingerprint,
                         cost=state0.cost, cost_residual=state0.cost_residual)
    if checkpoint is not None and checkpoint.resume:
        snap = _resumed(snap, directory, key, fingerprint, estimator)
        if checkpoint.on_resume is not None:
            checkpoint.on_resume(snap.step)
    mesh = sharding.task_mesh(options.devices) if options.devices is not None and options.devices > 1 else None
    label = shown.label or estimator.name
    state_of = lambda s: OuterState(s.theta, s.opt_state, s.estimator_state, jnp.asarray(s.step, jnp.int32),
                                    s.cost, s.cost_residual, jnp.asarray(s.skipped, jnp.int32))
    t0 = time.perf_counter()
    step_fn = _compiled_step(problem, estimator, optimizer, sampler, options.meta_batch, mesh, shown.losses)
    step_fn = step_fn.lower(state_of(snap), key).compile()
    compile_seconds = time.perf_counter() - t0
    with_state = evaluation.fn is not None and _eval_takes_state(evaluation.fn)
    every_calls = evaluation.every_calls
    next_eval = (math.floor(snap.function_calls / every_calls) + 1) * every_calls if every_calls else None

    def save():  # one writer when several processes run the same program (jax.distributed)
        return ckpt.save(directory, snap) if jax.process_index() == 0 else ckpt.path(directory)

    def evaluate():
        return evaluation.fn(snap.theta, state_of(snap)) if with_state else evaluation.fn(snap.theta)

    zero_steps = 0

    def steps(advance):
        nonlocal next_eval, zero_steps
        while not budget.exhausted(snap.step, snap.function_calls, snap.seconds):
            t0 = time.perf_counter()
            new, m = step_fn(state_of(snap), key)
            m = {k: v.item() for k, v in jax.device_get(m).items()}  # waits for the step
            snap.seconds += time.perf_counter() - t0
            if m["nonfinite"] and options.on_nonfinite == "raise":
                cause = next((c for c in CAUSES if m[f"bad_{c}"]), "hypergradient")
                saved = save() if directory is not None else None
                where = f"; the last good state (step {snap.step}) is saved in {saved}" if saved else ""
                raise Diverged(f"outer step {snap.step + 1} of {label}: the {cause.replace('_', ' ')} is not finite "
                               f"(inner loss {m['inner_loss']:.4g}, outer loss {m['outer_loss']:.4g}, hypergradient "
                               f"norm {m['grad_norm']:.4g}); likely cause: {advice(cause)}{where}",
                               snap.step + 1, label, saved, cause)
            snap.theta, snap.opt_state, snap.estimator_state = new.theta, new.opt_state, new.estimator_state
            # one host copy per step: the budget, the log and the next step's input read it without device round trips
            snap.cost, snap.cost_residual = jax.device_get((new.cost, new.cost_residual))
            snap.skipped, snap.step = int(new.skipped), int(new.step)
            # a random estimator drawing 0 is a legitimate draw (UFOM's cheap branch where FOM's estimate is 0):
            # only a deterministic estimator's zeros say that nothing is left to learn
            zero_steps = zero_steps + 1 if m["grad_norm"] == 0 and not estimator.needs_key else 0
            if zero_steps >= SATURATED_STEPS:
                snap.stopped = (f"{label}: the hypergradient was exactly 0 for {zero_steps} outer steps in a row (θ "
                                f"saturated, e.g. σ(θ_i) at 0 or 1, or an estimator that does not see θ): stopped at "
                                f"step {snap.step}")
            if not shown.losses:
                m["outer_loss"] = m["inner_loss"] = None
            done = budget.exhausted(snap.step, snap.function_calls, snap.seconds) or bool(snap.stopped)
            due = evaluation.every is not None and snap.step % evaluation.every == 0
            if next_eval is not None and snap.function_calls >= next_eval:
                due = True
                next_eval = (math.floor(snap.function_calls / every_calls) + 1) * every_calls
            do_eval = evaluation.fn is not None and (done or due)
            if done or do_eval or snap.step % shown.log_every == 0:
                snap.log.append(_entry(snap, m, estimator, evaluate if do_eval else None))
            if directory is not None and (done or (checkpoint.every and snap.step % checkpoint.every == 0)):
                save()
            advance(1)
            if snap.stopped:
                return

    with (shown.bar or _no_progress)(label, budget.steps) as advance:
        advance(snap.step)
        try:
            steps(advance)
        except KeyboardInterrupt:  # between or inside steps: snap holds the last completed one
            raise Interrupted(snap.step, save() if directory is not None else None) from None
    return RunResult(snap.theta, snap.opt_state, snap.estimator_state, snap.log, snap.step, snap.function_calls,
                     snap.seconds, snap.skipped, compile_seconds, cost_record(snap.cost), snap.stopped)


def cost_record(total: Cost) -> dict:
    """The :data:`COST_FIELDS` of a run's Cost (``OuterState.cost``) and its ``function_calls``, as
    Python floats for a result row (host-side)."""
    total = jax.device_get(total)
    return {**{k: float(getattr(total, k)) for k in COST_FIELDS}, "function_calls": float(total.function_calls)}


def _resumed(snap: ckpt.Snapshot, directory, key, fingerprint, estimator) -> ckpt.Snapshot:
    """``snap`` continued from the checkpoint in ``directory`` (unchanged when there is none), after
    checking that it was written by a run with the same key, estimator, problem and optimizer."""
    restored = ckpt.load(directory, snap)
    if restored is None:
        return snap
    if not np.array_equal(restored.key, ckpt.key_data(key)):
        raise ValueError(f"the checkpoint {ckpt.path(directory)} was written by a run with another key "
                         "(seed); resume with the same key or use another checkpoint directory")
    differ = [k for k, v in (restored.fingerprint or {}).items() if fingerprint.get(k) != v]
    if differ:
        raise ckpt.CheckpointError(
            f"the checkpoint {ckpt.path(directory)} was written by a run with another "
            f"{' and '.join(differ)} ({estimator.name} now); resume with the same estimator, problem and "
            "optimizer, or use another checkpoint directory")
    restored.key, restored.fingerprint = key, fingerprint
    return restored


def _entry(snap: ckpt.Snapshot, m: dict, estimator: Estimator, evaluate) -> dict:
    entry = {"step": snap.step, "outer_loss": m["outer_loss"], "inner_loss": m["inner_loss"],
             "grad_norm": m["grad_norm"], "q": None}
    entry.update({k: float(v) for k, v in estimator.describe_state(snap.estimator_state).items()})
    entry.update(function_calls=snap.function_calls, seconds=snap.seconds, skipped=snap.skipped)
    if evaluate is not None:
        metrics = evaluate()
        if not isinstance(metrics, Mapping):
            raise ValueError(f"eval_fn must return a dict of metrics; got {type(metrics).__name__}")
        entry.update({str(k): float(v) for k, v in metrics.items()})
    return entry


def scan(step: Callable, state: OuterState, key, steps: int):
    """``steps`` applications of a :func:`make_step` function under one ``lax.scan``: returns the
    last state and the per-step metrics (``function_calls`` the run's total after each step), each
    with θ after the step as ``metrics["theta"]``, stacked on axis 0. Pure (jit and vmap it, e.g. over keys for many seeds at once)."""

    def body(s, _):
        s, m = step(s, key)
        return s, {**m, "theta": s.theta}

    return jax.lax.scan(body, state, None, length=steps)


def raise_if_diverged(metrics, label: str) -> None:
    """Raise :class:`Diverged` naming the first non-finite step of ``label`` and its cause, given
    the stacked metrics of :func:`scan` (or one step's metrics). Host-side: it reads the flags."""
    flags = np.atleast_1d(np.asarray(jax.device_get(metrics["nonfinite"])))
    if not flags.any():
        return
    bad = np.argwhere(flags)[0]
    index = tuple(bad)
    cause = next((c for c in CAUSES if np.atleast_1d(np.asarray(metrics[f"bad_{c}"]))[index]), "hypergradient")
    step = int(index[-1]) + 1
    where = f" (run {tuple(int(i) for i in index[:-1])})" if len(index) > 1 else ""
    raise Diverged(f"outer step {step} of {label}{where}: the {cause.replace('_', ' ')} is not finite; likely cause: "
                   f"{advice(cause)}", step, label, None, cause)
