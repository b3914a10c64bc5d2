"""The anchor of a speed claim: the fastest plain JAX program of the same algorithm that a
competent JAX user would write, measured in the same process as ablo's estimator.

One hand-written program (``references``) fixes one layout of the dense layers, and XLA's CPU
code for a product depends on which operand it reads along its rows; so the anchor is the
fastest of several plain programs, each written from the problem's losses without ablo:

* layouts of every dense layer, ``LAYOUTS``: ``x@W`` (W stored (in, out)), ``x@W.T`` (W stored
  (out, in), as PyTorch stores it), ``einsum`` (``jnp.einsum("nd,kd->nk", x, W)``, W (out, in)),
  ``stored-T`` (the data and every activation stored transposed, (features, n), and ``W @ x``);
* for the exact hypergradient, ``jax.grad`` through a ``lax.scan`` of the r GD steps with the
  step under each ``jax.checkpoint`` policy of ``POLICIES`` (none: every residual kept;
  ``nothing_saveable``: only the carried state; ``dots_saveable``: the matrix products kept);
* for FOM, a ``fori_loop`` of the r steps and the outer gradient (it also returns whether φ_r
  is finite, as ablo's estimate reports, so that XLA keeps the loop where ∂L_out/∂θ = 0).

Every program is compiled with the data as arguments; its temp memory is XLA's
``memory_analysis``; all programs of one (problem, r) are then called in turn, the order reversed
every other repeat, in one single-threaded process (``worker.ENV``), and the CPU seconds of each
call recorded. The anchor of an algorithm is its plain program with the smallest median time;
each program's figure is the median over repeats of its time / the anchor's time in the same
repeat (``summarize``).
"""

from __future__ import annotations

import os
import statistics

#: Layouts of the dense layers (see the module docstring).
LAYOUTS = ("x@W", "x@W.T", "einsum", "stored-T")
#: ``jax.checkpoint`` policies of the plain exact program's step; None: no ``jax.checkpoint``.
POLICIES = ("none", "nothing_saveable", "dots_saveable")
#: ablo estimators timed against the anchors, and the algorithm each is anchored to.
ABLO = {"reverse": "exact", "reverse-residuals": "exact", "checkpointed": "exact", "fom": "fom", "ufom": "fom"}


def _dense(layout: str, w, b, h):
    import jax.numpy as jnp

    if layout == "x@W":
        return h @ w + b
    if layout == "x@W.T":
        return h @ w.T + b
    if layout == "einsum":
        return jnp.einsum("nd,kd->nk", h, w) + b
    return w @ h + b[:, None]  # stored-T: h is (features, n), the result (out, n)


def _ce(logits, y, axis: int):
    """Per-example cross-entropy of integer labels, classes along ``axis``."""
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits, axis=axis)
    return -(jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0] if axis == 1
             else jnp.take_along_axis(logp, y[None, :], axis=0)[0])


def plain_problem(data, layout: str):
    """-> (inner_loss, outer_loss, φ_0, task) of the benchmark problem in ``data`` (``problems.make_data``)
    written in plain JAX in ``layout``: L_in = mean_i σ(θ_i) CE_i + λ Σ ‖W‖², L_out = validation CE,
    the data's activation between the layers. φ_0 and task are arrays in that layout."""
    import jax
    import jax.numpy as jnp

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    from .problems import layers

    act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[str(data["activation"])]
    transposed_w = layout != "x@W"
    phi0 = [(jnp.asarray(data[f"w{i}"].T if transposed_w else data[f"w{i}"]), jnp.asarray(data[f"b{i}"]))
            for i in range(layers(data))]
    t = layout == "stored-T"
    task = {"x": jnp.asarray(data["x_tr"].T.copy() if t else data["x_tr"]), "y": jnp.asarray(data["y_tr"]),
            "x_val": jnp.asarray(data["x_val"].T.copy() if t else data["x_val"]), "y_val": jnp.asarray(data["y_val"])}
    l2, axis = float(data["l2"]), 0 if t else 1

    def logits(phi, x):
        for w, b in phi[:-1]:
            x = act(_dense(layout, w, b, x))
        return _dense(layout, *phi[-1], x)

    def inner_loss(theta, phi, task):
        ce = _ce(logits(phi, task["x"]), task["y"], axis)
        return jnp.mean(jax.nn.sigmoid(theta) * ce) + l2 * sum(jnp.sum(w ** 2) for w, _ in phi)

    def outer_loss(theta, phi, task):
        return jnp.mean(_ce(logits(phi, task["x_val"]), task["y_val"], axis))

    return inner_loss, outer_loss, phi0, task


def plain_program(data, layout: str, r: int, algorithm: str, policy: str = "none"):
    """-> (f(θ, φ_0, task), φ_0, task): the plain JAX hypergradient of ``algorithm`` ("exact":
    ``jax.grad`` through a ``lax.scan`` of r GD steps, the step under ``jax.checkpoint`` with
    ``policy``; "fom": a ``fori_loop`` of r steps, then (∂L_out/∂θ, whether φ_r is finite))."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}; got {policy!r}")
    if algorithm not in ("exact", "fom"):
        raise ValueError(f"algorithm must be 'exact' or 'fom'; got {algorithm!r}")
    inner_loss, outer_loss, phi0, task = plain_problem(data, layout)
    lr = float(data["lr"])
    grad = jax.grad(inner_loss, argnums=1)

    def step(th, phi, task):
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, phi, grad(th, phi, task))

    if algorithm == "fom":
        def fom(th, phi0, task):
            phi = lax.fori_loop(0, r, lambda _, p: step(th, p, task), phi0)
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(phi)]))
            return jax.grad(outer_loss)(th, phi, task), finite

        return fom, phi0, task
    if policy != "none":
        step = jax.checkpoint(step, policy=getattr(jax.checkpoint_policies, policy))

    def objective(th, phi0, task):
        phi = lax.scan(lambda p, _: (step(th, p, task), None), phi0, None, length=r)[0]
        return outer_loss(th, phi, task)

    return jax.grad(objective), phi0, task


def plain_name(algorithm: str, layout: str, policy: str = "none") -> str:
    return f"plain {algorithm} {layout}" + ("" if policy == "none" else f" checkpoint({policy})")


def anchor_worker(spec: dict) -> dict:
    """One (problem, r) in this process: compile ablo's estimators (``spec["methods"]``, default
    ``ABLO``) and every plain program (``spec["exact"]``, pairs (layout, policy), default
    ``spec["layouts"]`` × ``POLICIES``, for the exact hypergradient, ``spec["layouts"]`` for FOM),
    read their temp memory, check every hypergradient against ablo's reverse (FOM's against ablo's
    FOM), and time ``spec["repeats"]`` alternating repeats after one untimed call of each (with
    ``spec["first_timed"]`` that first call, made in turn, is the first repeat).
    -> ``{"programs": {name: {...}}, ...}``."""
    import jax

    from .problems import build, load_data
    from .worker import compare, compile_estimator, cpu_clock, flat, temp_mb, timed

    load_start = os.getloadavg()[0]
    data = load_data(spec["data"])
    r = int(spec["r"])
    problem, theta, task = build(spec["problem"], data, r)
    layouts = tuple(spec.get("layouts") or LAYOUTS)
    calls, info = {}, {}
    for method in spec.get("methods") or ABLO:
        call, compile_s, mb, _ = compile_estimator(method, problem, theta, task, r)
        calls[f"ablo {method}"] = call
        info[f"ablo {method}"] = {"kind": "ablo", "algorithm": ABLO[method], "temp_mb": mb, "compile_s": compile_s}
    algorithms = {ABLO[m] for m in spec.get("methods") or ABLO}
    exact = [tuple(c) for c in spec["exact"]] if "exact" in spec else [(lay, pol) for lay in layouts for pol in POLICIES]
    combos = ([("exact", lay, pol) for lay, pol in exact] if "exact" in algorithms else []) + (
        [("fom", lay, "none") for lay in layouts] if "fom" in algorithms else [])
    for algorithm, layout, policy in combos:
        f, phi0, ptask = plain_program(data, layout, r, algorithm, policy)
        t = cpu_clock()
        compiled = jax.jit(f).lower(theta, phi0, ptask).compile()
        name = plain_name(algorithm, layout, policy)
        calls[name] = (lambda c=compiled, p=phi0, k=ptask: c(theta, p, k))
        info[name] = {"kind": "plain", "algorithm": algorithm, "layout": layout, "policy": policy,
                      "temp_mb": temp_mb(compiled), "compile_s": cpu_clock() - t}
    grads, times = {}, {k: [] for k in calls}
    for name, call in calls.items():  # the first call of each (untimed unless spec["first_timed"]), its hypergradient
        t = cpu_clock()
        out = jax.block_until_ready(call())
        if spec.get("first_timed"):
            times[name].append(cpu_clock() - t)
        grads[name] = flat(out[0] if isinstance(out, tuple) else out)
    for name in calls:
        ref = "ablo reverse" if info[name]["algorithm"] == "exact" else "ablo fom"
        if ref in grads:
            info[name].update(compare(grads[name], grads[ref], prefix="vs_ablo_"))
    names = list(calls)
    for i in range(len(times[names[0]]), max(1, int(spec.get("repeats", 3)))):
        for k in (names if i % 2 == 0 else names[::-1]):
            times[k].append(timed(calls[k]))
    for k, ts in times.items():
        info[k].update(time_s=statistics.median(ts), times=ts)
    return {"problem": spec["problem"], "r": r, "programs": info, "loadavg": [load_start, os.getloadavg()[0]]}


def summarize(result: dict) -> dict:
    """Anchors and ratios of one (problem, r) result of ``anchor_worker`` (or rounds merged into
    one: ``times`` holding every repeat, in the same order for every program).

    Per algorithm, the anchor is the plain program with the smallest median time; every program's
    ``vs_anchor`` is the median over repeats of its time / the anchor's time in that repeat.
    For ablo's reverse also: temp memory against the plain scan without ``jax.checkpoint`` in the
    anchor's layout and against ``checkpoint(nothing_saveable)`` in the same layout, and
    ``equal_memory``: its time against the fastest plain exact program whose temp memory is at most
    ``EQUAL_MEMORY_SLACK`` × its own."""
    progs = result["programs"]
    out = {"problem": result["problem"], "r": result["r"], "anchors": {}, "rows": []}
    for algorithm in ("exact", "fom"):
        plain = {k: v for k, v in progs.items() if v["kind"] == "plain" and v["algorithm"] == algorithm}
        if plain:
            out["anchors"][algorithm] = min(plain, key=lambda k: plain[k]["time_s"])
    for name, p in progs.items():
        anchor = out["anchors"].get(p["algorithm"])
        row = {"program": name, **{k: v for k, v in p.items() if k != "times"}}
        if anchor:
            row["anchor"] = anchor
            row["vs_anchor"] = _ratio(p["times"], progs[anchor]["times"])
        out["rows"].append(row)
    rev, anchor = progs.get("ablo reverse"), out["anchors"].get("exact")
    if rev and anchor and rev.get("temp_mb"):
        layout = progs[anchor]["layout"]  # compare in the anchor's layout where all policies were run there
        if any(plain_name("exact", layout, p) not in progs for p in POLICIES):
            layout = next(v["layout"] for v in progs.values() if v["kind"] == "plain"
                          and all(plain_name("exact", v["layout"], p) in progs for p in POLICIES))
        scan, cheap = plain_name("exact", layout), plain_name("exact", layout, "nothing_saveable")
        memory = {"ablo_temp_mb": rev["temp_mb"], "layout": layout,
                  "plain_scan_temp_mb": progs[scan]["temp_mb"], "nothing_saveable_temp_mb": progs[cheap]["temp_mb"],
                  "time_vs_plain_scan": _ratio(rev["times"], progs[scan]["times"]),
                  "time_vs_nothing_saveable": _ratio(rev["times"], progs[cheap]["times"])}
        fits = [k for k, v in progs.items() if v["kind"] == "plain" and v["algorithm"] == "exact"
                and v["temp_mb"] is not None and v["temp_mb"] <= EQUAL_MEMORY_SLACK * rev["temp_mb"]]
        if fits:
            best = min(fits, key=lambda k: progs[k]["time_s"])
            memory.update(equal_memory_program=best, equal_memory_temp_mb=progs[best]["temp_mb"],
                          equal_memory_ratio=_ratio(rev["times"], progs[best]["times"]))
        out["reverse_memory"] = memory
    return out


#: "At equal memory": plain programs holding at most this multiple of ablo reverse's temp memory.
EQUAL_MEMORY_SLACK = 1.05


def _ratio(a: list, b: list) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def merge_rounds(results: list) -> dict:
    """Rounds (processes) of one (problem, r) as one result: every program's repeats concatenated in
    round order (so the i-th repeats still pair up), its temp memory and agreement from round 1."""
    first = results[0]
    progs = {}
    for name, p in first["programs"].items():
        ts = [t for res in results for t in res["programs"][name]["times"]]
        progs[name] = {**p, "times": ts, "time_s": statistics.median(ts)}
    return {"problem": first["problem"], "r": first["r"], "programs": progs, "rounds": len(results),
            "loadavg": [res["loadavg"] for res in results]}


def markdown(summaries: list, machine: dict, notes: str = "") -> str:
    """The anchors run as Markdown: per (problem, r) every program's CPU time, its ratio to the
    anchor of its algorithm and its temp memory; then ablo reverse's memory beside its time."""
    lines = [f"Machine: {machine.get('cpu')}, {machine.get('nproc')} cores, jax {machine.get('jax')}; "
             f"load average {', '.join(f'{x:.1f}' for x in machine.get('loadavg', ()))}. {notes}", ""]
    for s in summaries:
        lines += [f"### {s['problem']}, r = {s['r']}", "",
                  f"Anchors (fastest plain JAX): exact = `{s['anchors'].get('exact')}`, FOM = `{s['anchors'].get('fom')}`.",
                  "", "| program | algorithm | CPU s (median) | / anchor | temp MB | cos vs ablo |", "|---|---|---|---|---|---|"]
        for row in sorted(s["rows"], key=lambda x: (x["algorithm"], x["kind"] != "ablo", x["time_s"])):
            cos = row.get("vs_ablo_cos")
            lines.append(f"| {row['program']} | {row['algorithm']} | {row['time_s']:.3g} | "
                         f"{row['vs_anchor']:.2f} | {_mb(row.get('temp_mb'))} | {'-' if cos is None else f'{cos:.6f}'} |")
        m = s.get("reverse_memory")
        if m:
            lines += ["", f"ablo reverse: temp {m['ablo_temp_mb']:.1f} MB; plain scan ({m['layout']}) "
                          f"{m['plain_scan_temp_mb']:.1f} MB (time ratio {m['time_vs_plain_scan']:.2f}); "
                          f"checkpoint(nothing_saveable) ({m['layout']}) {m['nothing_saveable_temp_mb']:.1f} MB "
                          f"(time ratio {m['time_vs_nothing_saveable']:.2f})"
                          + (f"; at equal memory (fastest plain exact program within {EQUAL_MEMORY_SLACK:g}x its temp: "
                             f"`{m['equal_memory_program']}`, {m['equal_memory_temp_mb']:.1f} MB) "
                             f"{m['equal_memory_ratio']:.2f}" if "equal_memory_ratio" in m else
                             "; no plain exact program holds as little memory") + "."]
        lines.append("")
    return "\n".join(lines)


#: The configurations of ``python -m ablo.bench anchors``, sized for a shared two-core machine:
#: hypercleaning at r = 10 and 100 with every layout, policy and ablo estimator; the tanh MLP at
#: r = 100 (about 12 CPU s per exact call) with the two row-major layouts of a dense layer, every
#: policy, and ablo's reverse.
CONFIGS = {
    "hypercleaning:10": {"problem": "hypercleaning", "r": 10, "rounds": 1, "repeats": 5},
    "hypercleaning:100": {"problem": "hypercleaning", "r": 100, "rounds": 1, "repeats": 3},
    "mlp:100": {"problem": "mlp", "r": 100, "rounds": 1, "repeats": 2, "first_timed": True, "layouts": ["x@W.T"],
                "exact": [["x@W", "none"]] + [["x@W.T", p] for p in POLICIES], "methods": ["reverse"]},
}


def run_anchors(out_dir, names=tuple(CONFIGS), mnist_dir=None, log=print) -> dict:
    """Run the configurations ``names`` of ``CONFIGS`` (problem, r, rounds, repeats, and optionally
    layouts, methods) in a fresh single-threaded process per round (``suite.call``), rounds
    interleaved across configurations; each process's result is kept as
    ``raw/<name>-round<k>.json``, then the report is rewritten from every raw file in ``out_dir``
    (``write_report``), so that configurations may run as separate commands. -> the summary."""
    import json
    import sys
    from pathlib import Path

    import numpy as np

    from ..atomic import atomic_write
    from .problems import make_data
    from .suite import call

    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown anchors configuration {unknown}; choose from {sorted(CONFIGS)}")
    out_dir = Path(out_dir)
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)
    for p in sorted({CONFIGS[n]["problem"] for n in names}):
        path = out_dir / f"{p}.npz"
        if not path.exists():  # the same data for every configuration of the problem
            np.savez(path, **make_data(p, mnist_dir=mnist_dir))
    for k in range(max(CONFIGS[n]["rounds"] for n in names)):
        for n in names:
            c = CONFIGS[n]
            if k >= c["rounds"]:
                continue
            spec = dict(c, data=str(out_dir / f"{c['problem']}.npz"), mnist=mnist_dir is not None)
            got = call([sys.executable, "-m", "ablo.bench", "anchor-worker", json.dumps(spec)])
            if "error" in got:
                raise RuntimeError(f"{n} round {k + 1}: {got['error']}")
            atomic_write(out_dir / "raw" / f"{n.replace(':', '-r')}-round{k + 1}.json", json.dumps(dict(got, spec=spec)))
            log(f"round {k + 1} {n} (load {got['loadavg'][0]:.1f} / {got['loadavg'][1]:.1f}): " + ", ".join(
                f"{p} {v['time_s']:.3g}s" for p, v in got["programs"].items()))
    return write_report(out_dir)


def write_report(out_dir) -> dict:
    """``anchors.json`` (every repeat, the load at the start and end of every process),
    ``anchors.md`` and ``anchors.csv`` (one row per program), written atomically from the raw
    results in ``out_dir/raw``. -> the summary."""
    import json
    from pathlib import Path

    from ..atomic import atomic_write
    from ..results import write_csv
    from .report import machine

    out_dir = Path(out_dir)
    raw = [json.loads(p.read_text()) for p in sorted((out_dir / "raw").glob("*.json"))]
    groups = {}
    for res in raw:
        groups.setdefault((res["problem"], res["r"]), []).append(res)
    merged = [merge_rounds(g) for _, g in sorted(groups.items(), key=lambda kv: (kv[0][0] != "hypercleaning", kv[0]))]
    summaries = [summarize(m) for m in merged]
    summary = {"experiment": "bench-anchors", "specs": [g[0]["spec"] for g in groups.values()],
               "machine": machine(), "results": summaries, "raw": merged}
    notes = ("CPU seconds of single-threaded processes (processes x alternating repeats: "
             + "; ".join(f"{m['problem']} r={m['r']}: {m['rounds']} x {len(m['programs']['ablo reverse']['times']) // m['rounds']}"
                         for m in merged)
             + "); ratios are medians of per-repeat ratios. Load average (1 min) at the start / end of each process: "
             + "; ".join(f"{m['problem']} r={m['r']}: " + ", ".join(f"{a:.1f} / {b:.1f}" for a, b in m["loadavg"])
                         for m in merged) + ".")
    summary["plots"] = [plot(s, out_dir / f"anchors-{s['problem']}-r{s['r']}.png") for s in summaries]
    atomic_write(out_dir / "anchors.json", json.dumps(summary, indent=1))
    atomic_write(out_dir / "anchors.md", markdown(summaries, summary["machine"], notes)
                 + "".join(f"\n![{Path(p).stem}]({Path(p).name})\n" for p in summary["plots"]))
    write_csv(out_dir / "anchors.csv", [{"problem": s["problem"], "r": s["r"], **{
        k: v for k, v in row.items() if not isinstance(v, (dict, list))}} for s in summaries for row in s["rows"]])
    return summary


def main(argv: list) -> None:
    """The ``anchors`` command."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m ablo.bench anchors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (anchors.json, anchors.md, anchors.csv, raw/)")
    ap.add_argument("--mnist-dir", default=None, help="MNIST for the mlp problem (default: synthetic data)")
    ap.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configurations of CONFIGS "
                                                               "(default: all); several commands may share --out")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from --out's raw results")
    a = ap.parse_args(argv)
    if a.report_only:
        if not list((Path(a.out) / "raw").glob("*.json")):
            raise SystemExit(f"--report-only: no raw results in {a.out}/raw")
        write_report(a.out)
    else:
        try:
            run_anchors(a.out, tuple(a.only.split(",")), mnist_dir=a.mnist_dir)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    print((Path(a.out) / "anchors.md").read_text())


def plot(s: dict, path) -> str:
    """Time / anchor against temp memory for every exact program of one (problem, r): plain JAX
    by layout (marker) and policy (colour), ablo's estimators labelled. -> the path written."""
    import matplotlib

    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..results import save_figure

    colours = dict(zip(POLICIES, ("tab:blue", "tab:orange", "tab:green")))
    markers = dict(zip(LAYOUTS, "osD^"))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in s["rows"]:
        if row["algorithm"] != "exact" or row.get("temp_mb") is None:
            continue
        if row["kind"] == "ablo":
            ax.plot(row["temp_mb"], row["vs_anchor"], "k*", ms=12)
            ax.annotate(row["program"], (row["temp_mb"], row["vs_anchor"]), xytext=(6, 4), textcoords="offset points",
                        fontsize=8)
        else:
            ax.plot(row["temp_mb"], row["vs_anchor"], markers[row["layout"]], color=colours[row["policy"]], ms=7,
                    alpha=0.8, label=f"{row['layout']}, {row['policy']}")
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="temp memory (MB, memory_analysis)", ylabel="CPU time / fastest plain JAX",
           title=f"{s['problem']}, r = {s['r']}: exact hypergradient, time against memory")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="plain JAX: layout, policy",
              title_fontsize=7)
    save_figure(fig, path)
    return str(path)


def _mb(x) -> str:
    return "-" if x is None else f"{x:.1f}"


__all__ = ["ABLO", "CONFIGS", "main", "write_report", "EQUAL_MEMORY_SLACK", "LAYOUTS", "POLICIES", "anchor_worker", "markdown", "merge_rounds",
           "plain_name", "plain_problem", "plain_program", "run_anchors", "summarize"]