"""One benchmark configuration (problem, method, r) in this process: ablo's estimator, the
hand-written JAX reference of the same algorithm (``references``) and, for some methods, other
ablo estimators to compare with (``COMPARE``), compiled ahead of time, their temp memory read
from ``memory_analysis``, then timed alternately so that every repeat of one sees the same
machine load as the others. Run as ``python -m ablo.bench worker SPEC_JSON``.
"""

from __future__ import annotations

import resource
import statistics
import time

import numpy as np

from .problems import AID_ITERS, build, estimator, load_data, ufom_key

#: Process CPU time (all threads). On a machine shared with other jobs, wall time measures the
#: load more than the code (a 2-core machine with load 15 gave wall/CPU ≈ 3.5 on one matmul);
#: CPU time counts only the cycles this process got. Workers run single-threaded (``ENV``), so
#: CPU time is what the wall time would be on an idle core.
cpu_clock = time.process_time
#: (XLA reads XLA_FLAGS as "--flag" words; a bare word, e.g. TensorFlow's intra_op_parallelism_threads=1,
#: silently stops it reading the flags after it.)
ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def single_threaded(environ) -> dict:
    """``environ`` with ``ENV``'s settings; its XLA_FLAGS are appended to the caller's, not put in their
    place, so flags the user set (a compile setting, a device count) still hold."""
    flags = environ.get("XLA_FLAGS", "")
    flags = flags if ENV["XLA_FLAGS"] in flags else " ".join(filter(None, [flags, ENV["XLA_FLAGS"]]))
    return {**environ, **ENV, "XLA_FLAGS": flags}


#: ablo estimators also timed in the process of a method, as "<name>_s" (same-process ratios).
COMPARE = {"checkpointed": ("reverse",), "binomial": ("reverse", "checkpointed")}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB: VmHWM of /proc/self/status, which starts
    afresh at exec (``ru_maxrss`` does not: a worker would report its driver's peak); ``ru_maxrss``
    where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(f, *args) -> float:
    """CPU seconds of this process for one call (see ``cpu_clock``)."""
    import jax

    t = cpu_clock()
    jax.block_until_ready(f(*args))
    return cpu_clock() - t


def temp_mb(compiled) -> float | None:
    mem = compiled.memory_analysis()
    return mem.temp_size_in_bytes / 2**20 if mem is not None else None


def gflop(compiled) -> float | None:
    """XLA's flop count of the compiled program (``cost_analysis``), GFLOP. XLA counts the body of
    a loop once, whatever its trip count: for an unrolled estimator this is one forward step, one
    backward step and the outer gradient, so two programs' counts compare their work per step."""
    costs = compiled.cost_analysis()
    costs = costs[0] if isinstance(costs, (list, tuple)) else costs
    return costs["flops"] / 1e9 if costs and "flops" in costs else None


def compile_estimator(method, problem, theta, task, r):
    """-> (compiled call with no arguments, compile CPU s, temp MB, GFLOP); the call returns (g, cost)."""
    import jax

    est = estimator(method, r)
    state = est.init(problem, theta, task)
    key = ufom_key() if method == "ufom" else jax.random.PRNGKey(0)
    t = cpu_clock()
    # data enter as arguments, not closed-over constants (XLA would fold them into the program)
    fn = jax.jit(lambda th, tk, st, k: est.estimate(problem, th, tk, st, k)[::2])
    compiled = fn.lower(theta, task, state, key).compile()
    return (lambda: compiled(theta, task, state, key)), cpu_clock() - t, temp_mb(compiled), gflop(compiled)


def compile_reference(method, problem, theta, task, r, lr):
    """-> (reference name, compiled call, compile CPU s, temp MB, GFLOP)."""
    import jax

    from .references import program

    name, f = program(method, problem, lr, r, AID_ITERS)
    t = cpu_clock()
    compiled = jax.jit(f).lower(theta, task).compile()
    return name, (lambda: compiled(theta, task)), cpu_clock() - t, temp_mb(compiled), gflop(compiled)


def flat(g) -> np.ndarray:
    import jax

    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(g)])


def worker(spec: dict) -> dict:
    """Compile, read memory and, if ``spec["run"]``, time ``spec["pairs"]`` alternating rounds of
    (estimator, reference, COMPARE...) after one untimed warm-up call of each (``spec["warmup"]``).

    Returns CPU seconds per program (``time_s``, ``ref_s``, ``<other>_s``: medians), the median of
    the per-round ratios estimator/reference (``ratio``) and estimator/other (``vs_<other>``), temp
    MB of each, XLA's GFLOP of estimator and reference (``gflop``, ``ref_gflop``: loop bodies
    counted once), the MB of one inner state, compile seconds, the cost record, the agreement of
    the estimate with the reference (cos, relative error) and peak RSS read after the estimator's
    first call, before the others are compiled."""
    import jax

    data = load_data(spec["data"])
    r, method = int(spec["r"]), spec["method"]
    problem, theta, task = build(spec["problem"], data, r)
    jax.block_until_ready((theta, task))
    out = {"rss_base_mb": peak_rss_mb(),
           "state_mb": sum(x.nbytes for x in jax.tree_util.tree_leaves(problem.initial_state(theta, task))) / 2**20}
    est, out["compile_s"], out["temp_mb"], out["gflop"] = compile_estimator(method, problem, theta, task, r)
    run = spec.get("run", True)
    if run:
        t = cpu_clock()
        g, c = jax.block_until_ready(est())
        first = cpu_clock() - t
        out["cost"] = c.as_dict()
        if spec.get("grad_out"):
            np.save(spec["grad_out"], flat(g).astype(np.float32))
    out["peak_rss_mb"] = peak_rss_mb()
    ref_name, ref, out["ref_compile_s"], out["ref_temp_mb"], out["ref_gflop"] = compile_reference(
        method, problem, theta, task, r, float(data["lr"]))
    out["ref"] = ref_name
    programs = {"time_s": est, "ref_s": ref}
    for other in COMPARE.get(method, ()):
        programs[f"{other}_s"], _, out[f"{other}_temp_mb"], _ = compile_estimator(other, problem, theta, task, r)
    if not run:
        return out
    t = cpu_clock()
    g_ref = jax.block_until_ready(ref())
    first_ref = cpu_clock() - t
    g_ref = g_ref[0] if method in ("fom", "ufom") else g_ref  # (g, φ_r finite): see references.fom
    out.update(compare(flat(g), flat(g_ref), prefix="vs_ref_"))
    times = {k: [] for k in programs}
    if spec.get("warmup", True):  # the first calls above were the warm-ups of estimator and reference
        for k in list(programs)[2:]:
            timed(programs[k])
    else:  # the first calls above are the first round
        times["time_s"].append(first)
        times["ref_s"].append(first_ref)
    names = list(programs)
    for i in range(max(1, int(spec.get("pairs", 1)))):
        for k in (names if i % 2 == 0 else names[::-1]):  # ABBA: drift in the load cancels
            if len(times[k]) <= i:
                times[k].append(timed(programs[k]))
    for k, ts in times.items():
        out[k] = statistics.median(ts)
    out["ratio"] = statistics.median(a / b for a, b in zip(times["time_s"], times["ref_s"]))
    for k in names[2:]:
        out[f"vs_{k[:-2]}"] = statistics.median(a / b for a, b in zip(times["time_s"], times[k]))
    out["times"] = times
    return out


def compare(g, ref, prefix: str = "") -> dict:
    """Cosine and relative error of ``g`` against ``ref`` (None when both are zero; cosine 0 when
    exactly one is: a zero hypergradient does not agree with a nonzero one), and
    ``nonfinite``: how many entries of ``g`` and ``ref`` are NaN or ±inf (then no cosine: a NaN
    hypergradient agrees with nothing, and its time is not a result)."""
    g, ref = np.asarray(g, np.float64), np.asarray(ref, np.float64)
    bad = int(np.size(g) - np.isfinite(g).sum() + np.size(ref) - np.isfinite(ref).sum())
    if bad:
        return {f"{prefix}cos": None, f"{prefix}rel_err": None, f"{prefix}nonfinite": bad}
    nr, ng = np.linalg.norm(ref), np.linalg.norm(g)
    if (ng > 0) != (nr > 0):  # one is exactly zero and the other is not: they do not agree
        return {f"{prefix}cos": 0.0, f"{prefix}rel_err": 1.0 if nr > 0 else None}
    cos = float(g @ ref / (ng * nr)) if ng > 0 and nr > 0 else None
    return {f"{prefix}cos": cos, f"{prefix}rel_err": float(np.linalg.norm(g - ref) / nr) if nr > 0 else None}
