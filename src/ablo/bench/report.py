"""What a benchmark run shows: the benchmark's checks (PASS/FAIL with the measured figure), the
Markdown tables, the PNG plots of time and temp memory against r, and the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .problems import CHECK_R

#: reverse's time / ``jax.grad`` through ``lax.scan`` at the check r, per problem.
REVERSE_MAX = {"hypercleaning": 1.0, "mlp": 0.9}
#: Least temp-memory ratio, standard form / reverse.
REVERSE_MEMORY_MIN = 10.0
#: Two-level checkpointed's time / reverse's time.
CHECKPOINTED_MAX = 1.6
#: Every other estimator's time / its hand-written reference.
OTHER_MAX = 1.10
#: Benchmark names whose hand-written reference is another name's: UFOM's ξ = 0 branch is FOM,
#: reverse storing residuals is the standard form.
SAME_ALGORITHM = {"ufom": "fom", "reverse-residuals": "reverse"}
#: Least cosine between an estimate and its reference's (float32; on the MLP, whose inner Hessian is
#: indefinite, 20 CG iterations amplify rounding: AID-CG agrees to ~1e-5 in cosine, ~1e-2 in
#: relative error).
AGREE_MIN_COS = 1 - 1e-4
#: Below this cosine with ablo's hypergradient of the same method, a peer's time is not shown as a
#: ratio: it computed something else (a zero or NaN result once stood in the table as a speed-up).
#: Looser than AGREE_MIN_COS: 20 float32 CG iterations on an indefinite Hessian legitimately
#: differ in the third digit.
PEER_VALID_COS = 0.9
#: Methods whose program has the loop structure of its reference, so that XLA's flop counts (a
#: loop body counted once) compare work per step; elsewhere (nested loops, a cond holding both
#: branches, CG's while loop) the column is left out.
FLOPS_COMPARABLE = {"reverse", "reverse-residuals", "fom", "truncated"}


def machine() -> dict:
    """CPU model, cores, memory, load, versions: the context every figure was measured in."""
    import jax

    info = {"nproc": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "platform": platform.platform()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")), None)
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["mem_gb"] = round(int(mem[1]) / 2**20, 1)
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return info


def _fmt(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def _rows(rows, problem=None, library="ablo"):
    return [r for r in rows if r.get("library", "ablo") == library and (problem is None or r["problem"] == problem)]


def check_r(rows, problem) -> int:
    checked = [r["r"] for r in _rows(rows, problem) if r.get("check")]
    return checked[0] if checked else CHECK_R.get(problem, 0)


def _verdict(row: dict, passed: bool) -> str:
    """PASS/FAIL of a time or memory check, or INVALID when the estimate timed was NaN/inf."""
    if row.get("nonfinite") or row.get("vs_ref_nonfinite"):
        return "INVALID (NaN result, not a time)"
    return "PASS" if passed else "FAIL"


def checks(rows: list) -> list:
    """The benchmark's checks, one line each, PASS/FAIL/NOT RUN with the figure."""
    ok = lambda b: "PASS" if b else "FAIL"
    out = []
    for p in sorted({r["problem"] for r in _rows(rows)}):
        R = check_r(rows, p)
        at = {r["method"]: r for r in _rows(rows, p) if r["r"] == R}
        rev = at.get("reverse", {})
        if "ratio" in rev:
            lim = REVERSE_MAX.get(p, 1.0)
            work = (f"; XLA's flops (loop bodies counted once: one forward and one backward step and the outer "
                    f"gradient) {rev['gflop']:.3g} vs {rev['ref_gflop']:.3g} GFLOP = {rev['gflop'] / rev['ref_gflop']:.2f}x"
                    if rev.get("gflop") and rev.get("ref_gflop") else "")
            out.append(f"{_verdict(rev, rev['ratio'] <= lim)} reverse time / jax.grad through lax.scan in the x @ W layout "
                       f"(one layout; the fastest plain JAX is the anchors command's) <= {lim}: {p} r={R}: "
                       f"{rev['ratio']:.2f} ({rev['time_s']:.3g} s vs {rev['ref_s']:.3g} s{work})")
        if rev.get("temp_mb") and rev.get("ref_temp_mb"):
            m = rev["ref_temp_mb"] / rev["temp_mb"]
            states = R * rev["state_mb"] if rev.get("state_mb") else None
            bound = (f"; the r stored states alone take {states:.1f} MB, so no states-storing sweep exceeds "
                     f"{rev['ref_temp_mb'] / states:.1f}" if states else "")
            out.append(f"{_verdict(rev, m >= REVERSE_MEMORY_MIN)} standard form temp / reverse temp >= {REVERSE_MEMORY_MIN:g}: "
                       f"{p} r={R}: {m:.1f} ({rev['ref_temp_mb']:.1f} MB vs {rev['temp_mb']:.1f} MB{bound})")
        ck = at.get("checkpointed", {})
        if "vs_reverse" in ck:
            out.append(f"{_verdict(ck, ck['vs_reverse'] <= CHECKPOINTED_MAX)} checkpointed time / reverse time <= "
                       f"{CHECKPOINTED_MAX}: {p} r={R}: {ck['vs_reverse']:.2f} (same process; grads "
                       f"{ck['cost']['grad_evals']:.0f}, two-level ideal {2 * R + 1})")
        for m, row in sorted(at.items()):
            if m == "reverse":
                continue
            out.append(_other(p, R, m, row, rows))
        for row in sorted((r for r in rows if r.get("problem") == p and r.get("nonfinite")),
                          key=lambda r: (r.get("library", "ablo"), r["method"], r["r"])):
            out.append(f"FAIL hypergradient is finite: {p} {row.get('library', 'ablo')} {row['method']} r={row['r']}: "
                       f"{row['nonfinite']} NaN/inf entries; its time is not a result")
        for row in sorted((r for r in rows if r.get("problem") == p and r.get("library", "ablo") != "ablo"
                           and (r.get("vs_ablo_same") or {}).get("cos") is not None),
                          key=lambda r: (r["library"], r["method"], r["r"])):
            cos = row["vs_ablo_same"]["cos"]
            out.append(f"{ok(cos >= AGREE_MIN_COS)} peer agrees with ablo's {row['method']} (cos >= "
                       f"{AGREE_MIN_COS:.4f}): {p} {row['library']}{' ' + row['variant'] if row.get('variant') else ''} "
                       f"r={row['r']}: cos {cos:.6f}")
        for m, row in sorted(at.items()):
            if row.get("vs_ref_nonfinite"):
                out.append(f"FAIL estimate agrees with its reference: {p} {m} r={R}: {row['vs_ref_nonfinite']} "
                           "NaN/inf entries in the estimate or the reference")
            cos = row.get("vs_ref_cos")
            if cos is not None:
                out.append(f"{ok(cos >= AGREE_MIN_COS)} estimate agrees with its reference (cos >= "
                           f"{AGREE_MIN_COS:.4f}): {p} {m} r={R}: cos {cos:.6f}, rel err {row['vs_ref_rel_err']:.1e}")
    return out


def _other(p, R, m, row, rows) -> str:
    """time / reference for ``m`` at R, or at the largest r where it was timed, or why not."""
    if row.get("ref") != SAME_ALGORITHM.get(m, m):
        fig = f"{row['ratio']:.2f}" if "ratio" in row else "not timed"
        return (f"INFO {p} {m} r={R}: no hand-written reference of this algorithm; time / {row.get('ref')} "
                f"reference: {fig}")
    if "ratio" in row:
        return f"{_verdict(row, row['ratio'] <= OTHER_MAX)} time / reference <= {OTHER_MAX}: {p} {m} r={R}: " \
               f"{row['ratio']:.2f} ({row['time_s']:.3g} s vs {row['ref_s']:.3g} s)"
    timed = sorted((r for r in _rows(rows, p) if r["method"] == m and "ratio" in r), key=lambda r: r["r"])
    if timed:
        t = timed[-1]
        return (f"{_verdict(t, t['ratio'] <= OTHER_MAX)} time / reference <= {OTHER_MAX}: {p} {m} at "
                f"r={t['r']} (not timed at r={R}: {_why(m)}): {t['ratio']:.2f}")
    return f"NOT RUN {p} {m} r={R}: {_why(m)}"


def _why(m) -> str:
    return {"recompute": "O(r²) gradient evaluations",
            "forward": "one tangent per θ coordinate (dim θ = n) through every step",
            "checkpointed": "more than 8 calls per step"}.get(m, "too expensive")


def markdown(summary: dict) -> str:
    """The run as Markdown: machine, one table per problem, checks, peers, plots."""
    rows, mach = summary["results"], summary["machine"]
    lines = [f"Machine: {mach.get('cpu')}, {mach.get('nproc')} cores, {mach.get('mem_gb')} GB, Python "
             f"{mach.get('python')}, jax {mach.get('jax')}; load average at the end "
             f"{', '.join(f'{x:.1f}' for x in mach.get('loadavg', ()))}. Times: CPU seconds of a single-threaded "
             "process, medians over rounds of each process's median; time/ref: median of per-repeat ratios "
             "against the hand-written JAX program of the same algorithm, timed alternately in the same process. "
             "flops/ref: XLA's flop counts (cost_analysis, loop bodies counted once) of estimator and reference.",
             ""]
    head = ("| problem | method | r | rounds | CPU s | ref | ref CPU s | time/ref | vs reverse | spread | temp MB "
            "| ref temp MB | ref/ablo temp | flops/ref | grads | HVPs | compile s | peak RSS MB | cos vs ref "
            "| rel err vs ref |")
    for p in summary["config"]["problems"]:
        lines += [f"### {p}", "", head, "|" + "---|" * (head.count("|") - 1)]
        for r in sorted(_rows(rows, p), key=lambda r: (r["r"], r["method"])):
            c = r.get("cost", {})
            mem = r["ref_temp_mb"] / r["temp_mb"] if r.get("temp_mb") and r.get("ref_temp_mb") else None
            flops = (r["gflop"] / r["ref_gflop"] if r.get("gflop") and r.get("ref_gflop")
                     and r["method"] in FLOPS_COMPARABLE else None)
            lines.append("| " + " | ".join([
                p, r["method"], str(r["r"]), str(r.get("rounds_run", 0)), _fmt(r.get("time_s")), str(r.get("ref", "-")),
                _fmt(r.get("ref_s")), _fmt(r.get("ratio"), ".2f"), _fmt(r.get("vs_reverse"), ".2f"),
                _fmt(r.get("spread"), ".0%"), _fmt(r.get("temp_mb"), ".1f"), _fmt(r.get("ref_temp_mb"), ".1f"),
                _fmt(mem, ".1f"), _fmt(flops, ".2f"), _fmt(c.get("grad_evals"), ".0f"), _fmt(c.get("hvps"), ".0f"),
                _fmt(r.get("compile_s"), ".2f"), _fmt(r.get("peak_rss_mb"), ".0f"),
                _fmt(r.get("vs_ref_cos"), ".6f"), _fmt(r.get("vs_ref_rel_err"), ".1e")]
                + ([f"ERROR: {r['error']}"] if "error" in r else [])) + " |")
        lines.append("")
    peers = summary.get("peer_ratios") or []
    if peers:
        lines += ["### Peers", "", "| problem | peer | form | method | r | peer CPU s | peer / ablo | peer / JAX reference "
                  "| peer peak RSS / ablo | cos vs ablo same method |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x['problem']} | {x['peer']} | {x['variant'] or '-'} | {x['method']} | {x['r']} | "
                  f"{x['peer_s']:.3g} | {_valid(x, x['vs_ablo'])} | {_valid(x, x['vs_jax_ref'])} | "
                  f"{_fmt(x['peak_rss_ratio'], '.2f')} | "
                  f"{_fmt(x['cos_same'], '.6f') if not x.get('nonfinite') else 'NaN result'} |" for x in peers]
        lines += [""] + [f"- {r['problem']} {r['library']} {r['method']} r={r['r']}: ERROR {r['error']}"
                         for r in rows if r.get("library", "ablo") != "ablo" and "error" in r]
        lines.append("")
    if summary.get("checks"):
        lines += ["### Checks", ""] + [f"- {c}" for c in summary["checks"]] + [""]
    for path in summary.get("plots", []):
        lines += [f"![{Path(path).stem}]({Path(path).name})", ""]
    return "\n".join(lines)


def _valid(peer: dict, ratio) -> str:
    """A peer's time ratio, or why it is none: a run that returned NaN/inf, or a hypergradient
    pointing elsewhere than ablo's of the same method (cosine below PEER_VALID_COS), timed nothing
    comparable."""
    if peer.get("nonfinite"):
        return f"invalid (NaN result; {_fmt(ratio, '.2f')})"
    if peer.get("cos_same") is not None and peer["cos_same"] < PEER_VALID_COS:
        return f"invalid (wrong result, cos {peer['cos_same']:.2f}; {_fmt(ratio, '.2f')})"
    return _fmt(ratio, ".2f")


def plots(rows: list, out_dir: Path) -> list:
    """``<problem>-time.png`` and ``<problem>-memory.png``: CPU time and temp memory against r
    (log-log), ablo's estimators solid, their hand-written references dashed in the same colour.
    Problems with one r get none. -> paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for p in sorted({r["problem"] for r in _rows(rows)}):
        mine = _rows(rows, p)
        if len({r["r"] for r in mine}) < 2:
            continue
        methods = sorted({r["method"] for r in mine})
        colours = dict(zip(methods, plt.get_cmap("tab10").colors))
        for what, key, ref_key, label in (("time", "time_s", "ref_s", "CPU seconds per hypergradient"),
                                          ("memory", "temp_mb", "ref_temp_mb", "temp memory (MB, memory_analysis)")):
            fig, ax = plt.subplots(figsize=(9.5, 4.8))
            for m in methods:
                pts = sorted((r["r"], r.get(key), r.get(ref_key)) for r in mine if r["method"] == m)
                own = [(r, v) for r, v, _ in pts if v]
                ref = [(r, v) for r, _, v in pts if v]
                if own:
                    ax.plot(*zip(*own), "o-", color=colours[m], label=m)
                if ref and all(r.get("ref", m) == m for r in mine if r["method"] == m):  # its own reference
                    ax.plot(*zip(*ref), "x--", color=colours[m], alpha=0.7, label=f"{m}: JAX reference")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("r (inner steps)")
            ax.set_ylabel(label)
            ax.set_title(f"{p}: {what} against r (solid: ablo, dashed: hand-written JAX)")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            fig.tight_layout()
            path = Path(out_dir) / f"{p}-{what}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(str(path))
    return written
