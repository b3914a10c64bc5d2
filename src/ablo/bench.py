"""Benchmarks of the hypergradient estimators against their ideal cost (issue 6).

For an estimator whose cost record says it spent G gradient evaluations and H HVPs (step
VJPs, paper 000 Proposition 1), the *ideal* time is G·C1 + H·C2, where C1 is the in-loop time
of one inner step (one gradient evaluation and update) and C2 that of one step VJP, both
measured in the same run: C1 = time(lax loop of n steps)/n, C2 = time(lax.scan of n step
VJPs over n stored states)/n. JVPs of V are not counted (V is constant in both problems).

Every configuration (problem, method, r) runs in a fresh subprocess (``python -m ablo.bench
worker SPEC``) so that its peak RSS is its own; the driver runs all configurations once per
*round* and repeats the rounds, so repeats of different configurations interleave and load
from other processes on a shared machine spreads over all of them. Reported times are medians
over rounds. Times are CPU seconds of a single-threaded worker (see ``cpu_clock``); wall time
is reported beside them. Inside a round a worker compiles ahead of time (compile time), takes the temp
bytes from ``memory_analysis``, makes one warm-up call when the configuration is cheap, and
times one call. Peers (other libraries) are workers of the same protocol: they read the same
``.npz`` data, time one hypergradient, and save it for comparison against ablo's exact one.

Problems (synthetic data of the stated shapes, float32, built from a seed):

* ``hypercleaning`` (paper 001 §4.2.1): n = 5000 examples, 784 features, 10 classes, half of
  the training labels corrupted; θ ∈ R^n, φ = (W, b), inner loss mean_i σ(θ_i) CE_i +
  0.001‖W‖², outer loss validation CE, φ_0 = 0, inner GD with α = 1.
* ``newsgroups`` (paper 004 §A.2, per-feature regularization): sparse-like TF-IDF rows (2%
  non-zero, unit norm) stored dense, 20 classes; θ = λ ∈ R^features, φ = W, inner loss
  CE + ½ mean(W² e^λ), outer loss validation CE, φ_0 = 0, inner GD.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {
    "full": {"hypercleaning": dict(n=5000, d=784, c=10), "newsgroups": dict(n=500, d=2000, c=20)},
    "smoke": {"hypercleaning": dict(n=64, d=16, c=3), "newsgroups": dict(n=48, d=32, c=4)},
}
LR = {"hypercleaning": 1.0, "newsgroups": 10.0}
METHODS = ("fom", "ufom", "reverse", "recompute", "checkpointed", "truncated", "aid-cg")
#: CG iterations N of AID-CG, for ablo and the peers alike.
AID_ITERS = 20


# --- data and problems ------------------------------------------------------------------------
def make_data(problem: str, size: str = "full", seed: int = 0) -> dict:
    """Synthetic arrays of the problem's shape (numpy, float32), plus θ at which to differentiate."""
    if problem not in SIZES[size]:
        raise ValueError(f"problem must be one of {sorted(SIZES[size])}; got {problem!r}")
    n, d, c = (SIZES[size][problem][k] for k in ("n", "d", "c"))
    rng = np.random.default_rng(seed)
    if problem == "hypercleaning":
        x = rng.normal(size=(2 * n, d)).astype(np.float32) / np.sqrt(d, dtype=np.float32)
    else:  # sparse-like TF-IDF rows: 2% non-zeros, Zipf-like column popularity, unit norm
        x = np.zeros((2 * n, d), np.float32)
        k = max(2, d // 50)
        cols = np.minimum((rng.pareto(1.0, size=(2 * n, k)) * d / 40).astype(int), d - 1)
        np.put_along_axis(x, cols, rng.random((2 * n, k)).astype(np.float32), axis=1)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    teacher = rng.normal(size=(d, c)).astype(np.float32) * np.sqrt(d, dtype=np.float32)
    y = np.argmax(x @ teacher + rng.gumbel(size=(2 * n, c)), axis=1).astype(np.int32)
    y_tr, y_val = y[:n].copy(), y[n:]
    if problem == "hypercleaning":  # corrupt half of the training labels (paper 001 §4.2.1)
        bad = rng.random(n) < 0.5
        y_tr[bad] = rng.integers(0, c, bad.sum())
    theta_dim = n if problem == "hypercleaning" else d
    theta = (rng.normal(size=theta_dim) * (1.0 if problem == "hypercleaning" else 0.5)).astype(np.float32)
    return dict(x_tr=x[:n], y_tr=y_tr, x_val=x[n:], y_val=y_val, theta=theta,
                lr=np.float32(LR[problem]), n_classes=np.int32(c))


def cross_entropy_terms(z, y):
    import jax
    import jax.numpy as jnp

    return jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]


def build(problem: str, data, r: int):
    """-> (BilevelProblem, θ, task) for ``problem`` on ``data`` (as written by make_data)."""
    import jax
    import jax.numpy as jnp

    from .inner import gd
    from .problem import BilevelProblem, constant_init

    # device_put, not jnp.asarray: on the CPU it aliases a 64-byte-aligned numpy array (see load_data)
    # instead of copying it, as torch.from_numpy does for the PyTorch peers
    task = {k: jax.device_put(data[k]) for k in ("x_tr", "y_tr", "x_val", "y_val")}
    theta = jax.device_put(data["theta"])
    d, c = task["x_tr"].shape[1], int(data["n_classes"])
    outer = lambda th, phi, t: jnp.mean(cross_entropy_terms(logits(phi, t["x_val"]), t["y_val"]))
    if problem == "hypercleaning":
        logits = lambda phi, x: x @ phi[0] + phi[1]
        phi0 = (jnp.zeros((d, c)), jnp.zeros(c))

        def inner(th, phi, t):
            ce = cross_entropy_terms(logits(phi, t["x_tr"]), t["y_tr"])
            return jnp.mean(jax.nn.sigmoid(th) * ce) + 1e-3 * jnp.sum(phi[0] ** 2)
    elif problem == "newsgroups":
        logits = lambda phi, x: x @ phi
        phi0 = jnp.zeros((d, c))

        def inner(th, phi, t):
            ce = jnp.mean(cross_entropy_terms(logits(phi, t["x_tr"]), t["y_tr"]))
            return ce + 0.5 * jnp.mean(phi ** 2 * jnp.exp(th)[:, None])
    else:
        raise ValueError(f"problem must be 'hypercleaning' or 'newsgroups'; got {problem!r}")
    return BilevelProblem(inner, outer, gd(float(data["lr"])), r, constant_init(phi0)), theta, task


def estimator(method: str, r: int):
    """The estimator benchmarked as ``method`` at r steps."""
    from . import estimators

    if method == "truncated":
        return estimators.get("truncated", K=max(1, r // 10))
    if method == "aid-cg":
        return estimators.get("aid-cg", **aid_options())
    return estimators.get(method)


def aid_options() -> dict:
    """AID-CG from φ_0 and v = 0 (no warm start: one hypergradient, as the peers compute it) with
    exactly ``AID_ITERS`` CG iterations (a tolerance no float32 residual reaches)."""
    return {"maxiter": AID_ITERS, "tol": 1e-30, "warm_start": False}


def available_methods() -> list:
    from . import estimators

    return [m for m in METHODS if m in estimators.REGISTRY]


def ufom_key(q: float = 0.1):
    """A PRNG key on which UFOM draws ξ = 0 (its cheap branch; the exact branch is timed as
    ``recompute``), so that a timing never falls into the O(r²) branch by chance."""
    import jax

    seed = 0
    while bool(jax.random.bernoulli(jax.random.PRNGKey(seed), q)):
        seed += 1
    return jax.random.PRNGKey(seed)


# --- measurements inside one process ----------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(f, *args) -> float:
    """CPU seconds of this process for one call (see ``cpu_clock``)."""
    import jax

    t = cpu_clock()
    jax.block_until_ready(f(*args))
    return cpu_clock() - t


#: Process CPU time (all threads). On a machine shared with other jobs, wall time measures the
#: load more than the code (a 2-core machine with load 15 gave wall/CPU ≈ 3.5 on one matmul);
#: CPU time counts only the cycles this process got. Workers run single-threaded (``ENV``), so
#: CPU time is what the wall time would be on an idle core.
cpu_clock = time.process_time
ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
#: (call, C1, C2) triples per paired worker, and the longest call (CPU s) that is repeated for them.
PAIRS, PAIR_MAX_S = 3, 10.0


def cache_env(cache_dir) -> dict:
    """JAX's persistent compilation cache in ``cache_dir`` for every program, however small or quick
    to compile: the first process that compiles a configuration is *cold* (its peak RSS includes
    XLA's compiler), later rounds load the compiled program (*warm*, as every later run of the same
    job on a machine with the cache enabled)."""
    return {"JAX_COMPILATION_CACHE_DIR": str(cache_dir), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}


def unit_costs(problem, theta, task, n: int):
    """Compile the unit-cost loops once; -> ``measure(repeats=3) -> (C1, C2)`` in seconds: one in-loop
    inner step, one in-loop step VJP (medians of ``repeats`` n-step loops, divided by n)."""
    import jax

    from .estimators.base import reverse_over, run_storing

    run = jax.jit(lambda th, tk: problem.run(th, tk, 0, n))
    s0 = problem.initial_state(theta, task)
    _, states = jax.jit(lambda th, tk: run_storing(problem, th, tk, s0, 0, n))(theta, task)
    b_s = jax.tree_util.tree_map(lambda x: x[-1], states)
    sweep = jax.jit(lambda th, tk, st, b: reverse_over(problem, th, tk, st, 0, th, b))
    timed(run, theta, task), timed(sweep, theta, task, states, b_s)  # compile and warm up

    def measure(repeats: int = 3) -> tuple[float, float]:
        c1 = statistics.median(timed(run, theta, task) for _ in range(repeats)) / n
        c2 = statistics.median(timed(sweep, theta, task, states, b_s) for _ in range(repeats)) / n
        return c1, c2

    return measure


def watch_compilation_cache():
    """-> ``warm()``: True when every compilation since this call was a hit of JAX's persistent
    compilation cache (``cache_env``), i.e. no compiler ran."""
    import jax

    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    return lambda: ("/jax/compilation_cache/cache_hits" in events
                    and "/jax/compilation_cache/cache_misses" not in events)


def load_data(path) -> dict:
    """The arrays of a problem's .npz, each copied into a 64-byte-aligned buffer: ``jax.device_put``
    on the CPU aliases such an array instead of copying it, so the data are held once, as in the
    PyTorch peers (``torch.from_numpy``). One array is loaded at a time."""
    out = {}
    with np.load(path) as z:
        for k in z.files:
            a = z[k]
            buf = np.empty(a.nbytes + 64, np.uint8)
            off = -buf.ctypes.data % 64
            out[k] = buf[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
            out[k][...] = a
    return out


def worker(spec: dict) -> dict:
    """One configuration in this (fresh) process: compile, memory, optional timed call(s).

    Peak RSS is read right after the timed call, before the paired unit costs (which compile and
    run two other programs that are part of the measurement, not of the estimator)."""
    import jax
    import jax.numpy as jnp

    data = load_data(spec["data"])
    r = int(spec["r"])
    problem, theta, task = build(spec["problem"], data, r)
    jax.block_until_ready((theta, task))
    out = {"rss_base_mb": peak_rss_mb()}
    if spec["method"] == "units":
        c1, c2 = unit_costs(problem, theta, task, n=r)()
        return {**out, "C1_s": c1, "C2_s": c2, "peak_rss_mb": peak_rss_mb()}
    est = estimator(spec["method"], r)
    state = est.init(problem, theta, task)
    key = ufom_key() if spec["method"] == "ufom" else jax.random.PRNGKey(0)
    warm = watch_compilation_cache()
    t = cpu_clock()
    # data enter as arguments, not closed-over constants (XLA would fold them into the program)
    compiled = jax.jit(lambda th, tk, st, k: est.estimate(problem, th, tk, st, k)).lower(theta, task, state, key).compile()
    out["compile_s"] = cpu_clock() - t
    out["warm"] = warm()  # the program came from the persistent compilation cache
    mem = compiled.memory_analysis()
    out["temp_mb"] = mem.temp_size_in_bytes / 2**20 if mem is not None else None
    if spec.get("run", True):
        if spec.get("warmup", True):
            jax.block_until_ready(compiled(theta, task, state, key))
        t, w = cpu_clock(), time.perf_counter()
        g, _, c = jax.block_until_ready(compiled(theta, task, state, key))
        out["time_s"], out["wall_s"] = cpu_clock() - t, time.perf_counter() - w
        out["cost"] = c.as_dict()
        if spec.get("grad_out"):
            np.save(spec["grad_out"], np.asarray(jnp.ravel(g), np.float32))
    out["peak_rss_mb"] = peak_rss_mb()
    if spec.get("run", True) and spec.get("paired_units"):
        # after the timed call (their programs must not count in the peak), then alternating with
        # further calls, so that each (call, C1, C2) triple sees the same load; loops as long as the
        # estimate's own (r steps, at most 100); calls over PAIR_MAX_S are not repeated
        pairs, measure = [], unit_costs(problem, theta, task, n=min(r, 100))
        for i in range(PAIRS if out["time_s"] <= PAIR_MAX_S else 1):
            c1, c2 = measure()
            pairs.append((out["time_s"] if i == 0 else timed(compiled, theta, task, state, key), c1, c2))
        out["pairs"] = pairs
        out["C1_s"], out["C2_s"] = (statistics.median(x[k] for x in pairs) for k in (1, 2))
    return out


# --- the driver --------------------------------------------------------------------------------
#: Configurations timed at r = 1000 (the others are compiled there, for memory, but not run).
RUN_AT_1000 = ("fom", "reverse")


def plan(problems, methods, rs, size: str, rounds: int) -> list:
    """ablo configurations as (spec, rounds). To keep a full run near 20 minutes on two cores:
    only r = 100 (where issue 6's criteria are) gets ``rounds`` rounds, other r one; r = 1000
    runs only ``RUN_AT_1000``; recompute (O(r²)) runs up to r = 100 on hypercleaning (one round)
    and r = 10 on newsgroups; checkpointed up to r = 100; the rest are compiled only (compile
    time, temp memory). Warm-up calls only at r <= 10.
    Timed runs at r >= 100 measure C1, C2 in the same process, alternating with repeated calls
    after the first timed one (``PAIRS``), so that the ratio to the ideal cost sees the same
    machine load as the calls themselves."""
    jobs = []
    for p in problems:
        jobs.append(({"problem": p, "method": "units", "r": 20 if size == "full" else 4}, rounds))
        for r in rs:
            for m in methods:
                run = size == "smoke" or not (
                    (r >= 1000 and m not in RUN_AT_1000) or (m == "checkpointed" and r > 100)
                    or (m == "recompute" and (r > 100 or (r >= 100 and p != "hypercleaning"))))
                single = r != 100 or (m == "recompute" and r >= 100) or not run
                jobs.append(({"problem": p, "method": m, "r": r, "run": run, "warmup": r <= 10 or size == "smoke",
                              "paired_units": run and r >= 100}, 1 if single else rounds))
    return jobs


def call(cmd: list, timeout: float = 1800, env: dict | None = None) -> dict:
    """Run one worker command (environment: ours, ``ENV`` and ``env``); its last stdout line is its
    JSON result."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV, **(env or {})})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def run_rounds(jobs: list, out_dir: Path, log=print, parallel: int = 2) -> list:
    """Run every job once per round, rounds interleaved, ``parallel`` worker processes at a time
    (times are per-process CPU time, so concurrent workers do not inflate each other's counts
    beyond shared-cache effects); -> one merged record per job.

    A job is ``(spec, rounds)`` for ablo or ``(spec, rounds, cmd)`` for a peer; ``spec`` gets
    ``data`` (the problem's .npz) and ``grad_out`` (where the worker saves its hypergradient)."""
    from concurrent.futures import ThreadPoolExecutor

    records = [dict(spec, times=[], runs=[]) for spec, *_ in jobs]

    def one(k, job, rec):
        spec, rounds, *cmd = job
        name = f"{spec['problem']}-{spec.get('library', 'ablo')}-{spec['method']}-r{spec['r']}"
        spec = dict(spec, data=str(out_dir / f"{spec['problem']}.npz"),
                    grad_out=str(out_dir / "grads" / f"{name}.npy") if k == 0 else None)
        argv = (cmd[0] if cmd else [sys.executable, "-m", "ablo.bench", "worker"]) + [json.dumps(spec)]
        res = call(argv, env=cache_env(out_dir / "jax-cache"))
        if "error" in res:
            rec["error"] = res["error"]
            log(f"  {name}: ERROR {res['error']}")
            return
        rec["runs"].append(res)
        if "time_s" in res:
            rec["times"].append(res["time_s"])
        log(f"  round {k + 1} {name}: " + ", ".join(f"{a}={res[a]:.4g}" for a in
                                                    ("time_s", "wall_s", "C1_s", "C2_s", "temp_mb", "peak_rss_mb")
                                                    if isinstance(res.get(a), (int, float))))

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        for k in range(max(j[1] for j in jobs)):
            todo = [(job, rec) for job, rec in zip(jobs, records) if k < job[1] and "error" not in rec]
            list(pool.map(lambda jr: one(k, *jr), todo))
    return [merge(rec, out_dir) for rec in records]


def merge(rec: dict, out_dir: Path) -> dict:
    """Medians over rounds, and the hypergradient file of the first round."""
    runs = rec.pop("runs")
    out = {k: v for k, v in rec.items() if k not in ("data", "grad_out")}
    for key in ("temp_mb", "rss_base_mb", "C1_s", "C2_s"):
        vals = [x[key] for x in runs if isinstance(x.get(key), (int, float))]
        if vals:
            out[key] = statistics.median(vals)
    for x in runs:
        if "peak_rss_mb" in x and "rss_base_mb" in x:
            x["rss_growth_mb"] = x["peak_rss_mb"] - x["rss_base_mb"]
    # ablo workers say whether the program was compiled (cold) or loaded from the cache (warm); the
    # headline peak RSS and growth are the warm ones where a round was warm (peers: every round)
    cold = [x for x in runs if not x.get("warm")]
    warm = [x for x in runs if x.get("warm")] or cold
    for key, group, name in (("compile_s", cold, "compile_s"), ("peak_rss_mb", warm, "peak_rss_mb"),
                             ("rss_growth_mb", warm, "rss_growth_mb"), ("peak_rss_mb", cold, "peak_rss_cold_mb"),
                             ("rss_growth_mb", cold, "rss_growth_cold_mb")):
        vals = [x[key] for x in group if isinstance(x.get(key), (int, float))]
        if vals:
            out[name] = statistics.median(vals)
    out["warm_rounds"] = sum(bool(x.get("warm")) for x in runs)
    walls = [x["wall_s"] for x in runs if "wall_s" in x]
    if walls:
        out["wall_s"] = statistics.median(walls)
    if out["times"]:
        out["time_s"] = statistics.median(out["times"])
        out["spread"] = (max(out["times"]) - min(out["times"])) / out["time_s"]
    if runs and "cost" in runs[0]:
        out["cost"] = runs[0]["cost"]
        c = runs[0]["cost"]
        # per process: the median over its (call, C1, C2) triples of call / ideal
        paired = [statistics.median(t / (c["grad_evals"] * c1 + c["hvps"] * c2) for t, c1, c2 in x["pairs"])
                  for x in runs if x.get("pairs")]
        if paired:
            out["paired_ratios"] = paired
    name = f"{rec['problem']}-{rec.get('library', 'ablo')}-{rec['method']}-r{rec['r']}"
    grad = out_dir / "grads" / f"{name}.npy"
    out["grad_file"] = str(grad) if grad.exists() else None
    return out


def compare(g, ref) -> dict:
    """Cosine and relative error of ``g`` against ``ref`` (None when ``ref`` is zero)."""
    g, ref = np.asarray(g, np.float64), np.asarray(ref, np.float64)
    nr, ng = np.linalg.norm(ref), np.linalg.norm(g)
    cos = float(g @ ref / (ng * nr)) if ng > 0 and nr > 0 else None
    return {"cos": cos, "rel_err": float(np.linalg.norm(g - ref) / nr) if nr > 0 else None}


def analyse(rows: list) -> list:
    """Add ideal cost, time/ideal ratio, and agreement with ablo's exact (reverse) hypergradient."""
    units = {r["problem"]: r for r in rows if r["method"] == "units" and "C1_s" in r}
    exact = {(r["problem"], r["r"]): r["grad_file"] for r in rows
             if r.get("library", "ablo") == "ablo" and r["method"] == "reverse" and r.get("grad_file")}
    same = {(r["problem"], r["method"], r["r"]): r["grad_file"] for r in rows
            if r.get("library", "ablo") == "ablo" and r.get("grad_file")}
    for row in rows:
        u = units.get(row["problem"])
        if u and "cost" in row and "time_s" in row and row.get("library", "ablo") == "ablo":
            c, src = row["cost"], row if "paired_ratios" in row else u
            row["ideal_s"] = c["grad_evals"] * src["C1_s"] + c["hvps"] * src["C2_s"]
            # paired: the median of per-round ratios, each against C1, C2 of the same process
            row["ratio_to_ideal"] = (statistics.median(row["paired_ratios"]) if "paired_ratios" in row
                                     else row["time_s"] / row["ideal_s"])
        if row.get("grad_file") and row["method"] != "units":
            g = np.load(row["grad_file"])
            ref = exact.get((row["problem"], row["r"]))
            if ref:
                row["vs_exact"] = compare(g, np.load(ref))
            own = same.get((row["problem"], row["method"], row["r"]))
            if row.get("library", "ablo") != "ablo" and own:
                row["vs_ablo_same"] = compare(g, np.load(own))
    return rows


def peer_ratios(rows: list) -> list:
    """For each peer row: its time and memory against ablo's same (problem, method, r)."""
    ablo = {(r["problem"], r["method"], r["r"]): r for r in rows if r.get("library", "ablo") == "ablo"}
    out = []
    for p in rows:
        a = ablo.get((p["problem"], p["method"], p["r"]))
        if p.get("library", "ablo") == "ablo" or a is None or "time_s" not in p or "time_s" not in a:
            continue
        out.append({"problem": p["problem"], "peer": p["library"], "method": p["method"], "r": p["r"],
                    "speedup": p["time_s"] / a["time_s"], "wall_speedup": p.get("wall_s", 0) / a.get("wall_s", 1),
                    "peak_rss_ratio": p["peak_rss_mb"] / a["peak_rss_mb"],
                    "peak_rss_cold_ratio": p["peak_rss_mb"] / a.get("peak_rss_cold_mb", a["peak_rss_mb"]),
                    "rss_growth_ratio": p["rss_growth_mb"] / max(a["rss_growth_mb"], 1.0),
                    "cos_same": p.get("vs_ablo_same", {}).get("cos")})
    return out


def criteria(rows: list, ratios: list) -> list:
    """Issue 6's done-when checks, one line each with the measured numbers, PASS or FAIL."""
    ok = lambda b: "PASS" if b else "FAIL"
    ablo = {(r["problem"], r["method"], r["r"]): r for r in rows if r.get("library", "ablo") == "ablo"}
    out = []
    for (p, m, r), row in ablo.items():
        if r == 100 and m in ("fom", "reverse", "recompute", "checkpointed", "aid-cg") and "ratio_to_ideal" in row:
            out.append(f"{ok(row['ratio_to_ideal'] <= 1.15)} time/ideal <= 1.15: {p} {m} r=100: "
                       f"{row['ratio_to_ideal']:.2f}")
    for p in sorted({k[0] for k in ablo}):
        for m in ("fom", "ufom", "recompute", "aid-cg", "reverse"):
            temps = {r: row["temp_mb"] for (q, n, r), row in ablo.items() if q == p and n == m and row.get("temp_mb")}
            if len(temps) < 2:
                continue
            rs = sorted(temps)
            shown = ", ".join(f"r={r}: {temps[r]:.2f} MB" for r in rs)
            if m == "reverse":  # linear: the same MB per step between every pair of r, and > 0
                slopes = [(temps[b] - temps[a]) / (b - a) for a, b in zip(rs, rs[1:])]
                linear = min(slopes) > 0 and max(slopes) <= 1.25 * min(slopes)
                out.append(f"{ok(linear)} reverse temp grows linearly in r: {p}: {shown} "
                           f"(slopes {', '.join(f'{x * 1024:.1f}' for x in slopes)} KB/step)")
            else:
                spread = max(temps.values()) / min(temps.values())
                out.append(f"{ok(spread <= 1.05)} temp constant within 5%: {p} {m}: {shown}")
    for x in ratios:
        tag = f"{x['problem']} {x['peer']} {x['method']} r={x['r']}"
        if x["peer"] == "jaxopt" and x["method"] == "aid-cg":
            out.append(f"{ok(x['speedup'] >= 1.0)} jaxopt time / ablo time >= 1.0: {tag}: {x['speedup']:.2f}")
        elif x["peer"] == "jaxopt":
            out.append(f"{ok(x['speedup'] >= 2 and x['rss_growth_ratio'] >= 5)} jaxopt unrolled: time ratio >= 2 "
                       f"and RSS-growth ratio >= 5: {tag}: {x['speedup']:.2f}, {x['rss_growth_ratio']:.2f}")
        else:
            out.append(f"{ok(x['speedup'] >= 2 and x['peak_rss_ratio'] >= 1)} PyTorch peer time ratio >= 2 and peak "
                       f"RSS ratio >= 1 (ablo warm; against ablo's cold, compiling process: "
                       f"{x['peak_rss_cold_ratio']:.2f}): {tag}: {x['speedup']:.2f}, {x['peak_rss_ratio']:.2f}")
    return out


def fmt(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def markdown(rows: list, ratios: list) -> str:
    """Two Markdown tables: every configuration, then every peer-to-ablo ratio."""
    head = ("| problem | library | method | r | CPU s/call | spread | wall s | compile s | grads | HVPs | ideal s "
            "| time/ideal | temp MB | peak RSS MB | RSS growth MB | cold peak RSS MB | cos vs exact | rel err vs exact |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["method"] == "units":
            continue
        c, v = r.get("cost", {}), r.get("vs_exact", {})
        lines.append("| " + " | ".join([
            r["problem"], r.get("library", "ablo"), r["method"], str(r["r"]), fmt(r.get("time_s")),
            fmt(r.get("spread"), ".0%") if len(r.get("times", [])) > 1 else "-", fmt(r.get("wall_s")),
            fmt(r.get("compile_s")),
            fmt(c.get("grad_evals"), ".0f"), fmt(c.get("hvps"), ".0f"), fmt(r.get("ideal_s")),
            fmt(r.get("ratio_to_ideal"), ".2f"), fmt(r.get("temp_mb"), ".1f"), fmt(r.get("peak_rss_mb"), ".0f"),
            fmt(r.get("rss_growth_mb"), ".0f"), fmt(r.get("peak_rss_cold_mb") if r.get("warm_rounds") else None, ".0f"),
            fmt(v.get("cos"), ".6f"), fmt(v.get("rel_err"), ".2e"),
        ] + ([f"ERROR: {r['error']}"] if "error" in r else [])) + " |")
    units = [r for r in rows if r["method"] == "units" and "C1_s" in r]
    lines += ["", "Peak RSS and RSS growth are of warm processes where a round was warm (the program loaded from "
                  "JAX's persistent compilation cache); cold peak RSS is that of the first, compiling process.",
              "", "time/ideal is paired (C1, C2 measured in the same process, alternating with repeated calls, median "
                  "over rounds) where r >= 100, else against the unit-cost job's medians.",
              "", "Unit costs (unit-cost job, medians over rounds): " + "; ".join(
        f"{u['problem']}: C1 = {u['C1_s'] * 1e3:.2f} ms, C2 = {u['C2_s'] * 1e3:.2f} ms" for u in units)]
    if ratios:
        lines += ["", "| problem | peer | method | r | peer CPU time / ablo | peer wall / ablo | peer peak RSS / ablo "
                      "| peer peak RSS / ablo cold | peer RSS growth / ablo | cos vs ablo same method |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x['problem']} | {x['peer']} | {x['method']} | {x['r']} | {x['speedup']:.2f} | "
                  f"{x['wall_speedup']:.2f} | {x['peak_rss_ratio']:.2f} | {x['peak_rss_cold_ratio']:.2f} | "
                  f"{x['rss_growth_ratio']:.2f} | "
                  f"{fmt(x.get('cos_same'), '.6f')} |" for x in ratios]
    checks = criteria(rows, ratios)
    if checks:
        lines += ["", "Checks (issue 6):", ""] + [f"- {c}" for c in checks]
    return "\n".join(lines) + "\n"


def run_suite(out_dir, problems=("hypercleaning", "newsgroups"), methods=None, rs=(10, 100, 1000),
              size: str = "full", rounds: int = 3, peers: list = (), log=print, parallel: int = 2) -> dict:
    """Write each problem's data, run ablo's configurations and ``peers`` (jobs of the form
    ``(spec, rounds, cmd)``) interleaved, and write results.json and results.md to ``out_dir``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}; got {size!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    out_dir = Path(out_dir)
    data = {p: make_data(p, size) for p in problems}  # validates the names before anything is written
    (out_dir / "grads").mkdir(parents=True, exist_ok=True)
    for p, arrays in data.items():
        np.savez(out_dir / f"{p}.npz", **arrays)
    methods = available_methods() if methods is None else list(methods)
    jobs = plan(problems, methods, rs, size, rounds) + list(peers)
    t0 = time.perf_counter()
    rows = analyse(run_rounds(jobs, out_dir, log, parallel))
    ratios = peer_ratios(rows)
    summary = {"experiment": "bench", "config": {"problems": list(problems), "methods": methods, "rs": list(rs),
                                                "size": size, "rounds": rounds, "sizes": SIZES[size], "lr": LR,
                                                "aid_iters": AID_ITERS, "parallel": parallel, "seconds": time.perf_counter() - t0},
               "results": rows, "peer_ratios": ratios, "checks": criteria(rows, ratios)}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "results.md").write_text(markdown(rows, ratios))
    return summary


def main(argv: list) -> None:
    if len(argv) == 2 and argv[0] == "worker":
        print(json.dumps(worker(json.loads(argv[1]))))
        return
    raise SystemExit("usage: python -m ablo.bench worker SPEC_JSON  (drivers: benchmarks/bench_estimators.py)")


if __name__ == "__main__":
    main(sys.argv[1:])
