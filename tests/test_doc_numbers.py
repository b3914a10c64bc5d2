"""The numbers docs/reproductions.md quotes are those of the committed result files: table rows and
sentences of each checked section are recomputed from the summary.json (or CSV) in the folder under
docs/results/ that the section names, so a re-run that changes a result fails here until the docs
follow it. A printed number agrees when the file's value rounds to it (its last printed digit)."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import ablo
from ablo.experiments import _paper

ROOT = Path(ablo.__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "reproductions.md").read_text()
RESULTS = ROOT / "docs" / "results"


def section(title: str) -> str:
    """The text of the section whose heading starts with ``title``, up to the next heading of the
    same or a higher level."""
    lines = DOC.splitlines()
    start = next(i for i, l in enumerate(lines) if re.match(r"#+ ", l) and l.lstrip("# ").startswith(title))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if re.match(r"#+ ", lines[i]) and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[start + 1:end])


def table(text: str, first_header: str) -> dict:
    """{first cell: {header: cell}} of the Markdown table in ``text`` whose header starts with
    ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"| {first_header} |"))
    cells_of = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # "\|" is text
    header = cells_of(lines[start])
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = cells_of(line)
        rows[cells[0]] = dict(zip(header, cells))
    return rows


NUMBER = r"[−-]?\d[\d,]*(?:\.\d+)?(?:e[−-]?\d+)?"


def numbers(cell: str) -> list:
    """The numbers printed in ``cell``, as strings ("**80.17** ± 1.39" → ["80.17", "1.39"])."""
    return re.findall(NUMBER, cell.replace("*", ""))


def agrees(printed: str, value: float) -> bool:
    """``value`` rounds to ``printed`` at its last printed digit ("0.0294", "2.9e-4", "102,000"); a
    float32 value that is a tie in decimal (0.7865 stored as 0.78649998) may round either way."""
    text = printed.replace("−", "-").replace(",", "")
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return abs(float(value) - float(text)) <= unit / 2 * (1 + 1e-9) + 1e-6 * abs(float(value))


def check(printed: str, value: float, what: str) -> None:
    assert agrees(printed, value), f"{what}: the docs print {printed}, the result file has {value:.6g}"


def summary(name: str) -> dict:
    return json.loads((RESULTS / name / "summary.json").read_text())


def pre_registered(title: str, folder: str) -> tuple:
    """(section text, the text on one line, summary) of a one-seed run whose section prints its
    command, the seed it reports and the seed its settings were chosen on (a seed not reported)."""
    text = section(title)
    flat = " ".join(text.split())
    assert f"--out docs/results/{folder}" in text
    s = summary(folder)
    seed, tuned = s["config"]["seed"], s["config"]["tuned_seeds"]
    assert seed not in tuned and f"reports seed {seed}" in flat and f"chosen on seed {tuned[0]}" in flat
    return text, flat, s


def test_agrees_reads_the_printed_precision():
    assert agrees("5.741", 5.7414) and not agrees("5.741", 5.7416)
    assert agrees("2.9e-4", 2.86e-4) and not agrees("2.9e-4", 2.84e-4)
    assert agrees("102,000", 102000.0) and not agrees("102,000", 102001.0)
    assert agrees("−0.14", -0.144) and not agrees("−0.14", 0.14)
    assert numbers("**80.17** ± 1.39") == ["80.17", "1.39"] and numbers("8.5e-6") == ["8.5e-6"]


def test_counterexample_table_and_points():
    text = section("Synthetic FOM counterexample")
    assert "--out docs/results/counterexample" in text
    s = summary("counterexample")
    rows = table(text, "method")
    for label, method in (("FOM (q = 0)", "fom"), ("UFOM (q = 0.1)", "ufom:q=0.1")):
        runs = [r for r in s["results"] if r["method"] == method]
        row = rows[label]
        assert int(row["seeds"]) == len(runs) == len(s["config"]["seeds"])
        grads = [r["final_abs_grad"] for r in runs]
        check(numbers(row["mean final θ"])[0], np.mean([r["final_theta"] for r in runs]), f"{label} θ")
        check(numbers(row["mean final \\|∂M/∂θ\\|"])[0], np.mean(grads), f"{label} |∂M/∂θ|")
        check(numbers(row["min"])[0], min(grads), f"{label} min")
        check(numbers(row["max"])[0], max(grads), f"{label} max")
    fixed = s["config"]["fom_fixed_points"][0]
    check(re.search(r"fixed point θ = (" + NUMBER + ")", text)[1], fixed["theta"], "FOM's fixed point")
    check(re.search(r"\|∂M/∂θ\| = √\(2D\) = (" + NUMBER + ")", text)[1], fixed["abs_grad_M"], "|∂M/∂θ| there")
    check(re.search(r"stationary point is θ = (" + NUMBER + ")", text)[1], s["config"]["stationary_points"][0],
          "stationary point")
    check(re.search(r"b₂ = (" + NUMBER + ")", text)[1], s["config"]["b"][1], "b₂")
    check(re.search(r"A = (" + NUMBER + ")", text)[1], s["config"]["A"], "A")


def test_hypercleaning_linear_table_against_its_run_and_shaban_table_2():
    text = section("Data hypercleaning, linear")
    s = summary("hypercleaning-linear")
    by_k = {r["method"]: r for r in s["results"]}
    rows = table(text, "K")
    assert len(rows) == len(by_k) == 5
    for label, row in rows.items():
        K = int(numbers(label)[0])
        run = by_k["reverse" if K == s["config"]["steps"] else f"truncated-{K}"]
        for column, key in (("test acc (%)", "test_acc"), ("val acc (%)", "val_acc"), ("val loss", "val_ce"),
                            ("F1", "f1"), ("‖d_λ f‖ at the end", "true_grad_norm"), ("calls", "function_calls")):
            check(numbers(row[column])[0], run[key], f"K = {K} {column}")
        paper = numbers(row["paper: test acc / val acc / val loss / F1"])
        for printed, key in zip(paper, ("test_acc", "val_acc", "val_ce", "f1")):
            check(printed, _paper.HYPERCLEANING_LINEAR[K][key], f"paper K = {K} {key}")
    calls = re.search(r"in function calls it is\s+(" + NUMBER + r") against (" + NUMBER + ")", text)
    check(calls[1], by_k["truncated-5"]["function_calls"], "K = 5 calls")
    check(calls[2], by_k["reverse"]["function_calls"], "full RMD calls")
    flat = " ".join(text.split())
    (seed,), tuned = s["config"]["seeds"], s["config"]["tuned_seeds"]
    assert seed not in tuned and f"reports seed {seed}" in flat and f"chosen on seed {tuned[0]}" in flat
    assert f"{s['config']['dataset']['corrupted']} of 5000 labels ended up wrong with seed {seed}" in flat
    assert f"wrong ({s['config']['dataset']['corrupted']})" in flat
    ratio = re.search(r"min (" + NUMBER + "), 1-RMD's last iterate", flat)[1]
    check(ratio, min(r["descent_ratio"] for r in s["results"]), "least descent ratio")
    paper = _paper.HYPERCLEANING_LINEAR
    gaps = [paper[r["K"] if r["method"] != "reverse" else s["config"]["steps"]]["val_acc"] - r["val_acc"]
            for r in s["results"]]
    low, high = re.search(r"below the paper's by (" + NUMBER + ") to (" + NUMBER + ") points", flat).groups()
    check(low, min(gaps), "least validation-accuracy gap")
    check(high, max(gaps), "largest validation-accuracy gap")


def test_task_interaction_table():
    """Table 3's analogue row by row (Δ vs full paired per trial), and the numbers the text draws from
    the run: its seeds, L, the paired differences and their intervals, the costs and the learned C."""
    from scipy import stats

    from ablo.config import estimator

    text, flat, s = pre_registered("Task interaction", "task-interaction")
    L = s["config"]["inner_L_at_start"]
    check(re.search(r"L = (" + NUMBER + ")", flat)[1], L, "L")
    check(re.search(r"2/L = (" + NUMBER + ")", flat)[1], 2 / L, "2/L")
    runs = {}
    for r in s["results"]:
        runs.setdefault(r["method"], []).append(r)
    assert all([r["trial"] for r in rs] == list(range(s["config"]["trials"])) for rs in runs.values())
    acc = {m: np.array([r["test_acc"] for r in rs]) * 100 for m, rs in runs.items()}
    delta = {m: a - acc["reverse"] for m, a in acc.items()}  # paired: same trial, same split
    calls = {m: np.array([r["function_calls"] / r["hyper_iterations"] for r in rs]) for m, rs in runs.items()}
    val = {m: np.array([r["val_loss"] for r in rs]) for m, rs in runs.items()}
    labels = {"1-RMD": "truncated-1", "5-RMD": "truncated-5", "25-RMD": "truncated-25",
              "Full RMD (K = T = 100)": "reverse", "FOM": "fom", "UFOM (q = 0.1)": "ufom",
              "Adaptive UFOM": "adaptive-ufom"}
    assert estimator("ufom").q == 0.1
    rows = table(text, "method")
    assert set(rows) == set(labels)
    for label, row in rows.items():
        m, rs = labels[label], runs[labels[label]]
        mean, sd = numbers(row["test acc (%)"])
        check(mean, acc[m].mean(), f"{label} test acc")
        check(sd, acc[m].std(), f"{label} test acc sd")
        printed = numbers(row["Δ vs full (points)"])
        check(printed[0], delta[m].mean(), f"{label} Δ")
        if m != "reverse":
            check(printed[1], delta[m].std(), f"{label} Δ sd")
        check(numbers(row["val loss at τ = 100"])[0], val[m].mean(), f"{label} val loss")
        check(numbers(row["‖d_θ f‖ at τ = 100"])[0], np.mean([r["true_grad_norm"] for r in rs]), f"{label} ‖d‖")
        check(numbers(row["calls / iter"])[0], calls[m].mean(), f"{label} calls / iter")
        check(numbers(row["sec / iter"])[0], np.mean([r["sec_per_iter"] for r in rs]), f"{label} sec / iter")
    start = np.array([r["test_acc_start"] for r in runs["fom"]]) * 100
    quoted = re.search(r"is (" + NUMBER + r") ± (" + NUMBER + r") %", text)
    check(quoted[1], start.mean(), "accuracy at θ_0")
    check(quoted[2], start.std(), "its sd")
    # FOM's rows are θ_0's: stopped on an exactly-0 hypergradient
    assert all(r["stopped"] and r["test_acc"] == r["test_acc_start"] for r in runs["fom"])
    assert f"stops after {runs['fom'][0]['hyper_iterations']} hyper-iterations" in flat
    learning = [m for m in runs if m != "fom"]
    assert all(r["best_val_step"] == s["config"]["outer_steps"] for m in learning for r in runs[m])
    by_trial = re.search(r"vary with their random branch draws \((\S+) and (\S+) by trial\)", flat)
    check_range(by_trial[1], calls["ufom"], "UFOM calls / iter by trial")
    check_range(by_trial[2], calls["adaptive-ufom"], "Adaptive UFOM calls / iter by trial")
    check(re.search(r"spent (" + NUMBER + ") s in outer steps", flat)[1], sum(r["seconds"] for r in s["results"]),
          "outer-step seconds")
    check(re.search(r"and (" + NUMBER + ") s compiling", flat)[1], sum(r["compile_seconds"] for r in s["results"]),
          "compile seconds")
    # the claims: paired differences, their 95 % t-intervals over the trials, the gains over θ_0
    half = lambda d: stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    for m, name in (("truncated-5", "5-RMD"), ("truncated-25", "25-RMD")):
        assert delta[m].min() > 0, f"{name} above full RMD in every trial"
    intervals = re.search(r"t-intervals of the paired difference over the 3 trials: \[(\S+), (\S+)\] and "
                          r"\[(\S+), (\S+)\] points\)", flat).groups()
    intervals += re.search(r"1-RMD's interval, \[(\S+), (\S+)\], resolves", flat).groups()
    intervals += re.search(r"full RMD \(95 % t-interval \[(\S+), (\S+)\]: three trials", flat).groups()
    intervals += re.search(r"t-intervals \[(\S+), (\S+)\] and \[(\S+), (\S+)\]\)\. With", flat).groups()
    for (low, high), m in zip(zip(intervals[::2], intervals[1::2]),
                              ("truncated-5", "truncated-25", "truncated-1", "fom", "ufom", "adaptive-ufom")):
        check(low.lstrip("+"), delta[m].mean() - half(delta[m]), f"{m} interval low")
        check(high.lstrip("+"), delta[m].mean() + half(delta[m]), f"{m} interval high")
        resolved = abs(delta[m].mean()) > half(delta[m])  # the interval excludes 0
        assert resolved == (m in ("truncated-5", "truncated-25")), f"{m}: the docs say the interval resolves an ordering"
    posts = re.search(r"by (\S+) and (\S+) of the \d+ test posts", flat)
    test_size = int(re.search(r"the (\d+) test posts", s["config"]["data"])[1])
    assert f"of the {test_size} test posts" in flat and np.allclose(acc["reverse"] * test_size / 100,
                                                                       np.round(acc["reverse"] * test_size / 100))
    for printed, m in zip(posts.groups(), ("truncated-5", "truncated-25")):
        check_range(printed, np.round(delta[m] * test_size / 100), f"{m} test posts")
    gains = [np.mean(acc[m] - np.array([r["test_acc_start"] for r in runs[m]]) * 100)
             for m in ("truncated-1", "truncated-5", "truncated-25", "reverse")]
    check_range(re.search(r"over θ_0 \((\S+) points on average\)", flat)[1], gains, "gain over θ_0")
    check_range(re.search(r"only (\S+) points above θ_0", flat)[1], gains, "gain over θ_0")
    means = [float(x) for x in re.search(r"the means fall with K \((\S+) > (\S+) > (\S+) > (\S+)\)", flat).groups()]
    assert means == sorted(means, reverse=True)
    for printed, m in zip(means, ("truncated-1", "truncated-5", "truncated-25", "reverse")):
        check(f"{printed:.2f}", acc[m].mean(), f"{m} mean")
    for k, m in enumerate(("truncated-1", "truncated-5", "truncated-25")):
        nxt = ("truncated-5", "truncated-25", "reverse")[k]
        assert (val[m] > val[nxt]).all(), f"validation loss falls with K in every trial ({m})"
    paired_val = re.search(r"by (\S+) ± (\S+), (\S+) ± (\S+) and (\S+) ± (\S+)\), but", flat).groups()
    for (mean, sd), m in zip(zip(paired_val[::2], paired_val[1::2]), ("truncated-1", "truncated-5", "truncated-25")):
        check(mean, (val[m] - val["reverse"]).mean(), f"{m} paired val loss")
        check(sd, (val[m] - val["reverse"]).std(), f"{m} paired val loss sd")
    lag = re.search(r"every trial, by (\S+) ± (\S+) and (\S+) ± (\S+)\)", flat).groups()
    for (mean, sd), m in zip(zip(lag[::2], lag[1::2]), ("ufom", "adaptive-ufom")):
        assert (val[m] > val["reverse"]).all()
        check(mean, (val[m] - val["reverse"]).mean(), f"{m} paired val loss")
        check(sd, (val[m] - val["reverse"]).std(), f"{m} paired val loss sd")
    ratio = re.search(r"cost (\S+)× and (\S+)× full RMD's calls on average \((\S+)× and (\S+)× by trial\)", flat)
    for k, m in enumerate(("ufom", "adaptive-ufom")):
        check(ratio[k + 1], calls[m].mean() / calls["reverse"].mean(), f"{m} calls ratio")
        check_range(ratio[k + 3], calls[m] / calls["reverse"], f"{m} calls ratio by trial")
    per_call = [r["seconds"] / r["function_calls"] * 1000 for r in s["results"]]
    check_range(re.search(r"one function call took (\S+) ms", flat)[1], per_call, "ms per call")
    # Fig. 6: curves.csv's evaluations, every eval_every hyper-iterations of each trial
    with open(RESULTS / "task-interaction" / "curves.csv") as f:
        points = [{k: float(v) if k not in ("method",) else v for k, v in r.items()} for r in csv.DictReader(f)]
    mean_at = lambda m, key: {step: np.mean([p[key] for p in points if p["method"] == m and p["step"] == step])
                              for step in sorted({p["step"] for p in points if p["method"] == m})}
    level = re.search(r"From τ = (\d+) on, K-RMD's ‖d_θ f‖ \(mean over trials\) stays level at (\S+) \(K = 1\), "
                      r"(\S+) \(K = 5\) and (\S+) \(K = 25\) while full RMD's keeps falling \((\S+) to (\S+)\)", flat)
    since = int(level[1])
    for printed, m in zip(level.groups()[1:4], ("truncated-1", "truncated-5", "truncated-25")):
        check_range(printed, [v for step, v in mean_at(m, "true_grad_norm").items() if step >= since], f"{m} ‖d‖")
    falling = [v for step, v in mean_at("reverse", "true_grad_norm").items() if step >= since]
    assert falling == sorted(falling, reverse=True)
    check(level[5], falling[0], "full RMD ‖d‖ at the start of the level")
    check(level[6], falling[-1], "full RMD ‖d‖ at the end")
    evaluations = re.search(r"negative at (\d+) of its (\d+) evaluations \((\d+) per trial; minimum (\S+)\), 5-RMD's at "
                            r"(\d+) \(minimum (\S+)\) and 25-RMD's at (\d+) \((\S+)\), all from τ = (\d+) on", flat).groups()
    mine = lambda m: [p for p in points if p["method"] == m]
    assert int(evaluations[1]) == len(mine("truncated-1")) == int(evaluations[2]) * s["config"]["trials"]
    for (count, low), m in zip(((evaluations[0], evaluations[3]), (evaluations[4], evaluations[5]),
                                (evaluations[6], evaluations[7])), ("truncated-1", "truncated-5", "truncated-25")):
        negative = [p for p in mine(m) if p["cosine"] < 0]
        assert int(count) == len(negative) and min(p["step"] for p in negative) >= int(evaluations[8]), m
        check(low, min(p["cosine"] for p in negative), f"{m} smallest cosine")
    cos = re.search(r"stay at (\S+) and (\S+) or above up to τ = (\d+), then fall to (\S+) and (\S+) from τ = (\d+) on, "
                    r"while the true gradient shrinks \((\S+) and (\S+) at τ = 100\)", flat).groups()
    for k, m in enumerate(("truncated-5", "truncated-25")):
        curve = mean_at(m, "cosine")
        check(cos[k], min(v for step, v in curve.items() if step <= int(cos[2])), f"{m} cosine up to τ = {cos[2]}")
        check_range(cos[3 + k], [v for step, v in curve.items() if step >= int(cos[5])], f"{m} cosine later")
        check(cos[6 + k], curve[100.0], f"{m} cosine at τ = 100")
    # the learned C (mean over trials) under full RMD, its six strongest pairs, median and ρ
    with open(RESULTS / "task-interaction" / "learned_C.csv") as f:
        rows_c = [r for r in csv.DictReader(f) if r["method"] == "reverse"]
    names = [r["row"] for r in rows_c]
    C = np.array([[float(r[n]) for n in names] for r in rows_c])
    upper = C[np.triu_indices(len(names), 1)]
    strongest = re.search(r"strongest couplings are (.*?); three", flat)[1]
    for printed, value in zip(re.findall(r"\((" + NUMBER + r")\)", strongest), sorted(upper, reverse=True)[:6]):
        check(printed, value, "a strongest coupling")
    fell = re.search(r"entry fell from (\S+) to (\S+), and ρ from (\S+) to (\S+)\. ", flat).groups()
    check(fell[0], 2 * np.logaddexp(0, s["config"]["B0"]), "C_ij at θ_0")
    check(fell[1], np.median(upper), "median C_ij")
    check(fell[2], np.logaddexp(0, s["config"]["nu0"]), "ρ at θ_0")
    check(fell[3], np.mean([r["rho"] for r in runs["reverse"]]), "learned ρ")


def test_hyper_representation_tables():
    """Table 4's part and the equal-calls part, row by row, and the differences the text draws from
    them, from the one default run on its reported seed."""
    text, flat, s = pre_registered("Hyper-representation, one-shot Omniglot", "hyper-representation")
    runs = {r["method"]: r for r in s["results"]}
    parts = {"Method (T = 10)": {"1-RMD": "1-RMD", "5-RMD": "5-RMD", "Full RMD": "Full RMD",
                                 "Short horizon (T = 1)": "Short horizon (T = 1)"},
             "method": {"ITD-BiO": "ITD-BiO", "AID-BiO": "AID-BiO (CG)", "FOM": "FOM", "UFOM (q": "UFOM",
                        "Adaptive UFOM": "Adaptive UFOM", "ANIL": "ANIL"}}
    for first, labels in parts.items():
        rows = table(text, first)
        assert len(rows) == len(labels) == sum(r["part"] == ("table4" if first != "method" else "calls")
                                                for r in s["results"])
        for label, row in rows.items():
            run = runs[next(m for prefix, m in labels.items() if label.startswith(prefix))]
            acc, ci = numbers(row["test acc (%) ± 95%"])
            check(acc, run["test_acc"], f"{label} test acc")
            check(ci, run["test_acc_ci95"], f"{label} interval")
            iters = row.get("hyper-iter.", row.get("hyper-iterations"))
            assert int(iters) == run["hyper_iterations"], label
            check(numbers(row["function calls / hyper-iter."])[0], run["function_calls"] / run["hyper_iterations"],
                  f"{label} calls / hyper-iteration")
            check(numbers(row["validation acc (%)"])[0], run["val_acc"], f"{label} validation acc")
            if first != "method":
                check(numbers(row["Sec/iter."])[0], run["sec_per_iter"], f"{label} sec / iter")
                check(numbers(row["memory of one hypergradient (MB)"])[0], run["memory_mb"], f"{label} memory")
    acc = {m: r["test_acc"] for m, r in runs.items()}
    gaps = re.search(r"5-RMD − full RMD = (" + NUMBER + r"), 1-RMD − full RMD = (" + NUMBER + r") and 5-RMD − 1-RMD = ("
                     + NUMBER + ")", flat)
    for printed, (a, b) in zip(gaps.groups(), (("5-RMD", "Full RMD"), ("1-RMD", "Full RMD"), ("5-RMD", "1-RMD"))):
        check(printed, acc[a] - acc[b], f"{a} − {b}")
        assert abs(acc[a] - acc[b]) < runs[a]["test_acc_ci95"] + runs[b]["test_acc_ci95"], "the intervals overlap"
    check(re.search(r"is (\d\.\d)·10¹²", flat)[1], runs["AID-BiO (CG)"]["solver_residual"] / 1e12, "CG residual")
    for pattern, (a, b) in ((r"(" + NUMBER + r") points below ITD-BiO", ("ITD-BiO", "AID-BiO (CG)")),
                            (r"(" + NUMBER + r") below ANIL", ("ANIL", "AID-BiO (CG)")),
                            (r"(" + NUMBER + r") points above ITD-BiO's", ("Full RMD", "ITD-BiO")),
                            (r"(" + NUMBER + r") points above ANIL", ("FOM", "ANIL")),
                            (r"ANIL is (" + NUMBER + r") points above ITD-BiO", ("ANIL", "ITD-BiO"))):
        check(re.search(pattern, flat)[1], acc[a] - acc[b], f"{a} − {b}")


@pytest.mark.parametrize("label, prefix", [("stocBiO", "stocbio"), ("ITD-BiO", "itd-bio"), ("AID-FP", "aid-fp"),
                                           ("AID-BiO", "aid-bio"), ("HOAG", "hoag")])
def test_newsgroups_table(label, prefix):
    rows = table(section("20 Newsgroups"), "method")
    row = next(v for k, v in rows.items() if k.startswith(label))
    run = next(r for r in summary("newsgroups")["results"] if r["method"].startswith(prefix))
    assert int(numbers(row["outer steps in 60 s"])[0]) == run["steps"]
    check(numbers(row["test loss"])[0], run["test_loss"], f"{label} test loss")
    check(numbers(row["test acc"])[0], run["test_acc"], f"{label} test acc")


def test_stochastic_hypercleaning_table():
    rows = table(section("Stochastic data hypercleaning"), "p")
    results = summary("stochastic-hypercleaning")["results"]
    assert len(rows) == 3
    for p, row in rows.items():
        for column, prefix in (("stocBiO (batch 50)", "stocbio"), ("BSA", "bsa"), ("TTSA", "ttsa"), ("HOAG", "hoag")):
            run = next(r for r in results if r["method"].startswith(prefix) and abs(r["p"] - float(p)) < 1e-9)
            loss, acc = numbers(row[column])
            check(loss, run["test_loss"], f"p = {p} {column} test loss")
            check(acc, run["test_acc"], f"p = {p} {column} test acc")


SUPERSCRIPT = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def powers(text: str) -> str:
    """``text`` with "2.1·10⁻⁴" written as "2.1e-4", which NUMBER reads."""
    return re.sub(r"·10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)", lambda m: "e" + m[1].translate(SUPERSCRIPT), text)


def curves(name: str, key) -> dict:
    """{key(row): [(seconds, step, test_loss, test_acc), ...]} of a run's curves.csv, in time order."""
    out = {}
    with open(RESULTS / name / "curves.csv") as f:
        for r in csv.DictReader(f):
            out.setdefault(key(r), []).append((float(r["seconds"]), int(r["step"]), float(r["test_loss"]),
                                               float(r["test_acc"])))
    return {k: sorted(v) for k, v in out.items()}


def at(curve: list, t: float) -> tuple:
    """The curve's last evaluation at or before time ``t``."""
    return [point for point in curve if point[0] <= t][-1]


def span(printed: str) -> tuple:
    """("a", "b") of a printed range "a-b" (or "a - b")."""
    return re.fullmatch(f"({NUMBER}) ?- ?({NUMBER})", printed).groups()


def check_range(printed: str, values, what: str) -> None:
    """"a-b" is the smallest and the largest of ``values``."""
    low, high = span(printed)
    check(low, min(values), f"{what} (smallest)")
    check(high, max(values), f"{what} (largest)")


def leader(by_method: dict, t: float) -> str:
    return min(by_method, key=lambda m: at(by_method[m], t)[2])


def test_newsgroups_sentences():
    text = powers(" ".join(section("20 Newsgroups").split()))
    runs = {r["method"].split(":")[0]: r for r in summary("newsgroups")["results"]}
    by = curves("newsgroups", lambda r: r["method"].split(":")[0])
    hoag, aid = runs["hoag"], runs["aid-bio"]
    matvecs = lambda r: (r["hvps"] - r["steps"]) / r["steps"]  # one mixed product per step besides the matvecs
    found = re.search(r"ε = (" + NUMBER + r") at the end\): (" + NUMBER + r") function calls in (" + NUMBER
                      + r") steps, i\.e\. about (" + NUMBER + r") matvecs per step \((" + NUMBER
                      + r") gradients and 1 mixed product besides\), against AID-BiO's (" + NUMBER + ")", text)
    check(found[1], hoag["tol"], "HOAG's ε at the end")
    assert int(found[2].replace(",", "")) == hoag["function_calls"] and int(found[3]) == hoag["steps"]
    check(found[4], matvecs(hoag), "HOAG's matvecs per step")
    check(found[5], hoag["grad_evals"] / hoag["steps"], "HOAG's gradients per step")
    check(found[6], matvecs(aid), "AID-BiO's matvecs per step")
    assert "No row is set in bold" in text and "**" not in section("20 Newsgroups").split("| method |")[1].split("\n\n")[0]
    assert hoag["cg_cap_hits"] == 0
    tenth = {m: next(p for p in c if p[1] == 10) for m, c in by.items()}
    check_range(re.search(r"test loss (" + NUMBER + "-" + NUMBER + r") after 10 steps each", text)[1],
                [p[2] for p in tenth.values()], "test loss after 10 steps")
    when = re.search(r"there after (" + NUMBER + r") s, AID-BiO after (" + NUMBER + r") s, AID-FP after (" + NUMBER
                     + r") s, ITD-BiO after (" + NUMBER + r") s and HOAG after (" + NUMBER + ") s", text)
    for i, m in enumerate(("stocbio", "aid-bio", "aid-fp", "itd-bio", "hoag"), 1):
        check(when[i], tenth[m][0], f"{m}'s time to 10 steps")
    last = re.search(r"every evaluation until the last ones, at (" + NUMBER + "-" + NUMBER + ") s", text)[1]
    ends = [c[-1][0] for c in by.values()]
    check_range(last, ends, "the last evaluations")
    times = sorted({p[0] for c in by.values() for p in c if 0 < p[0] < min(ends)})
    assert all(leader(by, t) == "stocbio" for t in times)
    assert leader(by, max(ends)) != "stocbio"
    level = re.search(r"levels off at (" + NUMBER + "-" + NUMBER + r") from (" + NUMBER + ") s on", text)
    start = float(level[2])
    check(level[2], next(p[0] for p in by["stocbio"] if p[0] >= start - 0.5), "where stocBiO levels off")
    check_range(level[1], [p[2] for p in by["stocbio"] if p[0] >= start - 0.5], "stocBiO's level")
    end = re.search(r"AID-FP \((" + NUMBER + r")\), AID-BiO \((" + NUMBER + r")\) and stocBiO \((" + NUMBER
                    + r")\) are within (" + NUMBER + ")", text)
    three = [runs[m]["test_loss"] for m in ("aid-fp", "aid-bio", "stocbio")]
    for printed, value in zip(end.groups(), three):
        check(printed, value, "final test loss")
    assert max(three) - min(three) < float(end[4])
    accs = re.search(r"\((" + NUMBER + r") against (" + NUMBER + ")-(" + NUMBER + r")\), but these differences are at "
                     r"most (" + NUMBER + r") points, the binomial standard error of one accuracy on (" + NUMBER
                     + r") posts \(about (" + NUMBER + ") points", text)
    check(accs[1], runs["stocbio"]["test_acc"], "stocBiO's accuracy")
    others = [r["test_acc"] for m, r in runs.items() if m != "stocbio"]
    check(accs[2], min(others), "lowest other accuracy")
    check(accs[3], max(others), "highest other accuracy")
    all_acc = [r["test_acc"] for r in runs.values()]
    assert min(all_acc) == runs["stocbio"]["test_acc"]
    check(accs[4], 100 * (max(all_acc) - min(all_acc)), "accuracy spread (points)")
    n = int(accs[5].replace(",", ""))
    assert f"{n} test posts" in summary("newsgroups")["config"]["data"]
    a = np.mean(all_acc)
    check(accs[6], 100 * np.sqrt(a * (1 - a) / n), "binomial standard error (points)")


def test_stochastic_hypercleaning_sentences():
    text = powers(" ".join(section("Stochastic data hypercleaning").split()))
    results = summary("stochastic-hypercleaning")["results"]
    runs = {(r["method"].split(":")[0], r["p"]): r for r in results}
    methods, ps = ("stocbio", "bsa", "ttsa", "hoag"), (0.1, 0.2, 0.4)
    by = curves("stochastic-hypercleaning", lambda r: (r["method"].split(":")[0], float(r["p"])))
    of = lambda m, key: [runs[(m, p)][key] for p in ps]
    loss = {(m, p): runs[(m, p)]["test_loss"] for m in methods for p in ps}

    rows = table(section("Stochastic data hypercleaning"), "p")  # bold marks the best of each p
    for p in ps:
        row = rows[f"{p:g}"]
        best_loss = min(methods, key=lambda m: loss[(m, p)])
        best_acc = max(methods, key=lambda m: runs[(m, p)]["test_acc"])
        for column, m in zip(("stocBiO (batch 50)", "BSA", "TTSA", "HOAG"), methods):
            cell_loss, cell_acc = row[column].split(" / ")
            assert ("**" in cell_loss) == (m == best_loss), f"p = {p} {column}: bold test loss"
            assert ("**" in cell_acc) == (m == best_acc), f"p = {p} {column}: bold test acc"

    check_range(re.search(r"ε reached (" + NUMBER + " - " + NUMBER + ")", text)[1], of("hoag", "tol"), "HOAG's ε")
    assert all(r["cg_cap_hits"] == 0 for r in results if r["method"] == "hoag")
    calls = lambda m: [runs[(m, p)]["function_calls"] / runs[(m, p)]["steps"] for p in ps]
    per_step = re.search(r"about (" + NUMBER + r") function calls per step on the full training set \(stocBiO's "
                         r"steps make (\d+), on batches", text)
    for value in calls("hoag"):
        check(per_step[1], value, "HOAG's calls per step")
    assert calls("stocbio") == [float(per_step[2])] * 3
    steps = re.search(r"outer steps: stocBiO (" + NUMBER + "-" + NUMBER + "), BSA (" + NUMBER + "-" + NUMBER
                      + "), TTSA (" + NUMBER + "-" + NUMBER + "), HOAG (" + NUMBER + "-" + NUMBER + ")", text)
    for i, m in enumerate(methods, 1):
        assert [int(s) for s in span(steps[i])] == [min(of(m, "steps")), max(of(m, "steps"))], m
    check_range(re.search(r"took (" + NUMBER + "-" + NUMBER + ") ms each", text)[1],
                [1000 * r["seconds"] / r["steps"] for r in (runs[("stocbio", p)] for p in ps)], "stocBiO's ms per step")
    check_range(re.search(r"first 10 steps is at (" + NUMBER + "-" + NUMBER + ") s", text)[1],
                [next(q for q in by[("hoag", p)] if q[1] == 10)[0] for p in ps], "HOAG's first point")

    first = re.search(r"every evaluation from its first \((" + NUMBER + r") s\) to (" + NUMBER + ") s, at every p", text)
    for p in ps:
        c = {m: by[(m, p)] for m in methods}
        check(first[1], c["stocbio"][1][0], f"p = {p}: stocBiO's first evaluation")
        times = sorted({q[0] for m in methods for q in c[m] if c["stocbio"][1][0] <= q[0] <= float(first[2])})
        assert all(leader(c, t) == "stocbio" for t in times), f"p = {p}"
    ttsa = re.search(r"test loss (" + NUMBER + "-" + NUMBER + r") after 30 s, still falling by about (" + NUMBER
                     + ") per second over the last (" + NUMBER + ") s", text)
    check_range(ttsa[1], of("ttsa", "test_loss"), "TTSA's final test loss")
    window = float(ttsa[3])
    for p in ps:
        c = by[("ttsa", p)]
        check(ttsa[2], (at(c, c[-1][0] - window)[2] - c[-1][2]) / window, f"p = {p}: TTSA's fall per second")

    gap = lambda p, others: min(loss[(m, p)] for m in others) - loss[("stocbio", p)]
    lead = re.search(r"shrinks as p grows, (" + NUMBER + r") at p = 0\.1 and (" + NUMBER + r") at p = 0\.2, as the "
                     r"paper states, to (" + NUMBER + r") at p = 0\.4", text)
    for printed, p in zip(lead.groups(), ps):
        check(printed, gap(p, ("bsa", "ttsa", "hoag")), f"p = {p}: stocBiO's lead")
    for name, m in (("BSA", "bsa"), ("TTSA", "ttsa")):
        trend = re.search(r"[Aa]gainst " + name + r" (?:the gap grows with p instead|it shrinks) \((" + NUMBER + "), ("
                          + NUMBER + "), (" + NUMBER + r")\)", text)
        for printed, p in zip(trend.groups(), ps):
            check(printed, gap(p, (m,)), f"p = {p}: gap to {name}")
    assert [leader({m: by[(m, p)] for m in methods}, 1e9) for p in ps] == ["stocbio", "stocbio", "hoag"]
    overrun = re.search(r"HOAG's last point \(step (" + NUMBER + r"), (" + NUMBER + r") s, after the 30 s mark.*?\((" + NUMBER
                        + r") against (" + NUMBER + r"); at HOAG's previous point, (" + NUMBER + r") s, it was (" + NUMBER
                        + r") against stocBiO's (" + NUMBER + r")\)", text)
    hoag4, stoc4 = by[("hoag", 0.4)], by[("stocbio", 0.4)]
    assert int(overrun[1]) == hoag4[-1][1]
    check(overrun[2], hoag4[-1][0], "HOAG's last point at p = 0.4")
    check(overrun[3], loss[("hoag", 0.4)], "HOAG at p = 0.4")
    check(overrun[4], loss[("stocbio", 0.4)], "stocBiO at p = 0.4")
    check(overrun[5], hoag4[-2][0], "HOAG's previous point")
    check(overrun[6], hoag4[-2][2], "HOAG's loss there")
    check(overrun[7], at(stoc4, hoag4[-2][0])[2], "stocBiO's loss there")
    hoag_steps = re.search(r"runs made (" + NUMBER + "), (" + NUMBER + ") and (" + NUMBER + r") steps at about ("
                           + NUMBER + ") calls each", text)
    assert [int(s) for s in hoag_steps.groups()[:3]] == of("hoag", "steps")
    for value in calls("hoag"):
        check(hoag_steps[4], value, "HOAG's calls per step")

    acc = re.search(r"level with BSA \((" + NUMBER + ") against (" + NUMBER + r"), within the binomial standard "
                    r"error of one accuracy on (" + NUMBER + r") images, about (" + NUMBER + ") points", text)
    check(acc[1], runs[("stocbio", 0.1)]["test_acc"], "stocBiO's accuracy at p = 0.1")
    check(acc[2], runs[("bsa", 0.1)]["test_acc"], "BSA's accuracy at p = 0.1")
    a, n = runs[("stocbio", 0.1)]["test_acc"], int(acc[3].replace(",", ""))
    assert f"{n} test images" in summary("stochastic-hypercleaning")["config"]["data"]
    assert 100 * abs(a - runs[("bsa", 0.1)]["test_acc"]) < 100 * np.sqrt(a * (1 - a) / n)
    check(acc[4], 100 * np.sqrt(a * (1 - a) / n), "binomial standard error (points)")

    ahead = re.search(r"HOAG ends ahead \((" + NUMBER + ") against (" + NUMBER + "), (" + NUMBER + ") against ("
                      + NUMBER + r")\)", text)
    for i, p in ((1, 0.2), (3, 0.4)):
        check(ahead[i], runs[("hoag", p)]["test_acc"], f"p = {p}: HOAG's accuracy")
        check(ahead[i + 1], runs[("stocbio", p)]["test_acc"], f"p = {p}: stocBiO's accuracy")
        assert runs[("hoag", p)]["test_acc"] == max(runs[(m, p)]["test_acc"] for m in methods)
    lowest = re.search(r"p = 0\.1 and 0\.2 \((" + NUMBER + ") and (" + NUMBER + r"), HOAG next with (" + NUMBER
                       + ") and (" + NUMBER + r")\)", text)
    for i, p in ((1, 0.1), (2, 0.2)):
        check(lowest[i], loss[("stocbio", p)], f"p = {p}: stocBiO's loss")
        check(lowest[i + 2], loss[("hoag", p)], f"p = {p}: HOAG's loss")
        assert sorted(methods, key=lambda m: loss[(m, p)])[:2] == ["stocbio", "hoag"]

    def wobble(m):  # sd (points) of a curve's accuracy about its 21-point running mean, one value per p
        out = []
        for p in ps:
            y = np.array([q[3] for q in by[(m, p)]])
            out.append(100 * np.std(y[10:-10] - np.convolve(y, np.ones(21) / 21, mode="valid")))
        return out
    noise = re.search(r"running mean is (" + NUMBER + "-" + NUMBER + r") points for TTSA, (" + NUMBER + "-" + NUMBER
                      + r") for stocBiO and (" + NUMBER + "-" + NUMBER + ") for BSA", text)
    for i, m in enumerate(("ttsa", "stocbio", "bsa"), 1):
        check_range(noise[i], wobble(m), f"{m}'s accuracy noise")
    assert "TTSA's accuracy curve is the smoothest of the three" in text
    assert all(t < min(s, b) for t, s, b in zip(wobble("ttsa"), wobble("stocbio"), wobble("bsa")))  # at every p


def test_toy2d_numbers():
    text = " ".join(section("Toy problem").split())  # sentences without their line breaks
    assert "--out docs/results/toy2d" in text
    s = summary("toy2d")
    cfg, rows = s["config"], {(r["objective"], r["method"]): r for r in s["results"]}
    assert cfg["bound_holds"] and "stays below Proposition 3.1's bound" in text
    check(re.search(r"at most (" + NUMBER + ") of it", text)[1], cfg["max_error_over_bound"], "error / bound")
    one, exact = rows[("f_tilde", "truncated-1")], rows[("f_tilde", "reverse")]
    lam = re.search(r"1-RMD converges to \((" + NUMBER + "), (" + NUMBER + r")\), where the true gradient is ("
                    + NUMBER + ")", text)
    for printed, value in zip(lam.groups(), (one["lambda_1"], one["lambda_2"], one["true_grad_norm"])):
        check(printed, value, "1-RMD on f̃")
    lam = re.search(r"exact method reaches \((" + NUMBER + "), (" + NUMBER + r")\) with gradient (" + NUMBER + ")", text)
    for printed, value in zip(lam.groups(), (exact["lambda_1"], exact["lambda_2"], exact["true_grad_norm"])):
        check(printed, value, "exact on f̃")
    check(re.search(r"\((" + NUMBER + r") at K = 25\)", text)[1], rows[("f_tilde", "truncated-25")]["distance_to_exact"],
          "25-RMD's distance to exact")
    ratios = cfg["descent_ratio_min"]
    on_f = re.search(r"minimum over the trajectory is ((?:" + NUMBER + ", )+" + NUMBER + r") and 1 \(exact\)", text)
    for printed, K in zip(on_f[1].split(", "), (1, 2, 5, 10, 25)):
        check(printed, ratios["f"][str(K)], f"min ratio on f, K = {K}")
    on_tilde = re.search(r"on f̃ the minima are ((?:" + NUMBER + ", )+" + NUMBER + ") and 1 for K = 2, 5, 10, 25, T", text)
    for printed, K in zip(on_tilde[1].split(", "), (2, 5, 10, 25)):
        check(printed, ratios["f_tilde"][str(K)], f"min ratio on f̃, K = {K}")
    check(re.search(r"1-RMD's own ratio falls to (" + NUMBER + ")", text)[1], ratios["f_tilde"]["1"], "1-RMD's ratio on f̃")


def test_synthetic_q_numbers():
    text = " ".join(section("Optimal q").split())
    assert "--out docs/results/synthetic-q" in text
    s = summary("synthetic-q")
    at = next(r for r in s["results"] if r["alpha"] == s["config"]["alpha_curve"])
    for name, key in (("D²", "D2"), ("V²", "V2"), ("q*", "q_theory")):
        check(re.search(re.escape(name) + r" = (" + NUMBER + ")", text)[1], at[key], name)
    calls = re.search(r"q = 0 never, q = q\* (" + NUMBER + r"), q = 1\s+(" + NUMBER + ")", text)
    assert at["calls_to_target_q0"] is None
    check(calls[1], at["calls_to_target_qstar"], "calls with q*")
    check(calls[2], at["calls_to_target_q1"], "calls with q = 1")
    grid = re.search(r"best q there, (" + NUMBER + r"), needs (" + NUMBER + ")", text)
    check(grid[1], at["q_grid"], "grid q")
    check(grid[2], at["calls_to_target_q_grid"], "calls with the grid q")
    q_theory = [r["q_theory"] for r in sorted(s["results"], key=lambda r: r["alpha"])]
    rise = re.search(r"theory's q\* rises (" + NUMBER + ") → (" + NUMBER + ")", text)
    check(rise[1], q_theory[0], "smallest q*")
    check(rise[2], q_theory[-1], "largest q*")
    picks = sorted((r["alpha"], r["q_grid"]) for r in s["results"])
    trend = re.search(r"0\.05 up to α = (" + NUMBER + r"), 0\.1 from α = (" + NUMBER + r") to (" + NUMBER
                      + r"), 0\.15 at α = (" + NUMBER + r") and 0\.65 at α = (" + NUMBER + ")", text)
    p = [trend[i] for i in range(1, 6)]
    upto = lambda printed, a: a <= float(printed) or agrees(printed, a)
    from_ = lambda printed, a: a >= float(printed) or agrees(printed, a)
    for alpha, q in picks:  # the sentence's ranges are the grid's picks, α by α
        expected = (0.05 if upto(p[0], alpha) else 0.1 if from_(p[1], alpha) and upto(p[2], alpha)
                    else 0.15 if agrees(p[3], alpha) else 0.65 if agrees(p[4], alpha) else None)
        assert q == expected, f"α = {alpha:.4g}: the grid picks q = {q}, the docs say {expected}"


def test_tradeoff_table_counts_are_the_estimators_expected_costs():
    """docs/estimators-tradeoffs.md's table at r = 100: gradient evaluations, HVPs and states as each
    estimator's ``expected_cost`` gives them."""
    text = (ROOT / "docs" / "estimators-tradeoffs.md").read_text()
    estimators = {"`Reverse()`": ablo.Reverse(), "`Checkpointed()` (M = 10)": ablo.Checkpointed(),
                  "`Binomial()` (s = 7)": ablo.estimators.get("binomial"),
                  "`Binomial(s=3)`": ablo.estimators.get("binomial", s=3), "`Recompute()`": ablo.Recompute()}
    rows = table(text, "estimator | temp MiB")
    for label, estimator in estimators.items():
        cost, row = estimator.expected_cost(100), rows[label]
        assert int(numbers(row["gradient evaluations"].replace(" ", ""))[0].replace(",", "")) == int(cost.grad_evals), label
        assert int(numbers(row["HVPs"])[0]) == int(cost.hvps), label
        assert int(numbers(row["states"])[0]) == int(cost.states), label
    assert "r = 1000 costs 3 547 gradient evaluations with 10 states" in text
    cost = ablo.estimators.get("binomial").expected_cost(1000)
    assert (int(cost.grad_evals), int(cost.states)) == (3547, 10)


def test_unbiased_comparison_table():
    text = section("UFOM beside the other unbiased estimators")
    assert "--out docs/results/unbiased" in text
    rows = {(r["problem"], r["method"]): r for r in summary("unbiased")["results"] if "variance_x_calls" in r}
    labels = {"telescope, single sample": "telescope", "telescope, Russian roulette": "telescope:form=roulette",
              "UFOM, q = 0.2 (exact branch: reverse)": "ufom:q=0.2,exact=reverse", "Adaptive UFOM": "adaptive-ufom",
              "ES, σ = 0.01, 8 pairs": "es:sigma=0.01,pairs=8", "PES, σ = 0.01, 8 pairs": "pes:sigma=0.01,pairs=8"}
    printed = table(text, "method")
    assert set(printed) == set(labels)
    for label, cells in printed.items():
        columns = [c for c in cells if c != "method"]
        assert len(columns) == len({problem for problem, _ in rows})
        for column in columns:
            problem, dim = re.fullmatch(r"`([\w-]+)` \(dim θ = (\d+)\)", column).groups()
            row = rows[(problem, labels[label])]
            assert int(dim) == row["dim_theta"], column
            check(numbers(cells[column])[0], row["variance_x_calls"], f"{label} on {problem}")
    # calls to target: the median over the runs, "(k of 5)" where not every run reached it, "—" where none did
    start = text.index("Calls to target")
    targets = table(text[start:], "method")
    names = {**{k: v for k, v in labels.items() if not k.startswith("UFOM")}, "reverse": "reverse", "reversible": "reversible", "UFOM, q = 0.2": "ufom:q=0.2,exact=reverse",
             "FOM (biased)": "fom", "truncated, K = 8 (biased)": "truncated:K=8"}
    assert set(targets) == set(names)
    for label, cells in targets.items():
        for column, cell in cells.items():
            if column == "method":
                continue
            row = rows.get((column.strip("`"), names[label]))
            if cell.startswith("—"):
                assert row is None or not row["reached"], (label, column)
                continue
            check(numbers(cell)[0], row["calls_to_target"], f"{label} calls to target on {column}")
            reached = re.search(r"\((\d) of (\d)\)", cell)
            assert row["reached"] == (int(reached[1]) / int(reached[2]) if reached else 1.0), (label, column)


def test_table_1_at_the_papers_protocol():
    """Table 1's rows (means ± sample std over the reported seeds, the paper's figures beside them) and
    the paired differences against exact (mean and 95% Student-t interval), from the merged run."""
    from scipy import stats

    text = section("At the paper's protocol")
    s = summary("hypercleaning-mlp-paper")
    assert s["config"]["seeds"] == [100, 101, 102, 103, 104]
    assert not set(s["config"]["seeds"]) & set(s["config"]["tuned_seeds"])
    runs = {}
    for r in s["results"]:
        runs.setdefault(r["method"], {})[r["seed"]] = r
    labels = {"exact (`reverse`)": "reverse", "FOM": "fom", "Adaptive UFOM": "adaptive-ufom"}
    keys = (("train (clean part)", "train_clean_acc"), ("test accuracy", "test_acc"), ("test CE", "test_ce"))
    rows = table(text, "method")
    assert set(rows) == set(labels)
    for label, method in labels.items():
        for column, key in keys:
            values = np.array([r[key] for r in runs[method].values()])
            printed = numbers(rows[label][column])
            check(printed[0], values.mean(), f"{label} {column}")
            if len(printed) > 1:
                check(printed[1], values.std(ddof=1), f"{label} {column} std")
        paper = _paper.reference("hypercleaning", s["config"], {"method": method, "estimator": method})
        for column, key in (("paper: train", "train_clean_acc"), ("paper: test", "test_acc"), ("paper: CE", "test_ce")):
            check(numbers(rows[label][column])[0], paper[f"paper_{key}"], f"{label} {column}")
    diffs = table(text, "difference")
    for label, method in (("FOM − exact", "fom"), ("Adaptive UFOM − exact", "adaptive-ufom")):
        for column, key in keys:
            d = np.array([runs[method][seed][key] - runs["reverse"][seed][key] for seed in s["config"]["seeds"]])
            half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
            mean, lo, hi = numbers(diffs[label][column])
            check(mean, d.mean(), f"{label} {column}")
            check(lo, d.mean() - half, f"{label} {column} lower")
            check(hi, d.mean() + half, f"{label} {column} upper")


def fewshot_curves(name: str) -> dict:
    """{method: [(function_calls, test_acc, test_acc_ci95), ...]} of a few-shot run's curves.csv."""
    out = {}
    with open(RESULTS / name / "curves.csv") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["method"], []).append((float(r["function_calls"]), float(r["test_acc"]),
                                                    float(r["test_acc_ci95"])))
    return {m: sorted(c) for m, c in out.items()}


def test_fewshot_table():
    """Table 2's analogue row by row (test accuracy, its 95% interval over the held-out tasks, outer
    steps, calls; the paper's columns), the runs' seeds, and the numbers of the sentences: the
    differences the claims rest on, calls per outer step, the curve points, the Reptile variants."""
    text = section("Few-shot Omniglot")
    flat = " ".join(text.split())
    main = summary("fewshot")
    sgd, adam = summary("fewshot/reptile/sgd"), summary("fewshot/reptile/adam-5e-3")
    for s in (main, sgd, adam):
        assert s["config"]["seeds"] == [1] and s["config"]["tuned_seeds"] == [0]
    assert "the runs report seed 1" in flat and "chosen on seed 0 (`tuned_seeds`" in flat
    assert "--out docs/results/fewshot`" in flat
    assert "--out docs/results/fewshot/reptile/sgd`" in flat and "--out docs/results/fewshot/reptile/adam-5e-3`" in flat
    cfg = main["config"]
    assert (cfg["budget_calls"], cfg["eval_tasks"], cfg["ways"], cfg["size"]) == (200000, 1000, 20, 14)
    assert (cfg["reptile_inner_optimizer"], cfg["reptile_inner_lr"], cfg["reptile_eval_steps"]) == ("adam", 5e-4, 50)
    assert (sgd["config"]["reptile_inner_optimizer"], sgd["config"]["reptile_inner_lr"],
            sgd["config"]["reptile_eval_steps"], sgd["config"]["reptile_eval_batch"]) == ("sgd", 0.4, 10, 20)
    assert (adam["config"]["reptile_inner_optimizer"], adam["config"]["reptile_inner_lr"]) == ("adam", 5e-3)
    assert sgd["config"]["budget_calls"] == adam["config"]["budget_calls"] == 100000
    runs = {r["method"]: r for r in main["results"]}
    labels = {"FOM": runs["fom"], "exact (`recompute`)": runs["recompute"], "UFOM (q = 0.1)": runs["ufom"],
              "Adaptive UFOM": runs["adaptive-ufom"], "Reptile, Nichol et al.'s protocol (the default)": runs["reptile"],
              "Reptile, Nichol et al.'s protocol with inner Adam step 5e-3": adam["results"][0],
              "Reptile, FOM's inner loop (SGD 0.4)": sgd["results"][0]}
    paper = {"FOM": "fom", "exact (": "exact", "Adaptive UFOM": "adaptive-ufom", "Reptile, Nichol et al.'s protocol (":
             "reptile"}
    rows = table(text, "method")
    assert len(rows) == len(labels)
    for label, row in rows.items():
        run = next(r for prefix, r in labels.items() if label.startswith(prefix))
        acc, ci = numbers(row["test acc (%), seed 1"])
        check(acc, run["test_acc"], f"{label} test acc")
        check(ci, run["test_acc_ci95"], f"{label} interval")
        assert int(row["outer steps"]) == run["steps"], label
        assert int(row["function calls"].replace(",", "")) == run["function_calls"], label
        key = next((k for prefix, k in paper.items() if label.startswith(prefix)), None)
        printed = numbers(row["paper 30-way / 40-way"])
        assert len(printed) == (2 if key else 0), label
        for ways, p in zip((30, 40), printed):
            check(p, _paper.FEWSHOT_OMNIGLOT_1SHOT[ways][key], f"{label} paper {ways}-way")
    adaptive_label = next(label for label in rows if label.startswith("Adaptive UFOM"))
    check(re.search(r"mean q (" + NUMBER + ")", adaptive_label)[1], runs["adaptive-ufom"]["mean_q"], "mean q")
    best = max([*runs.values(), sgd["results"][0], adam["results"][0]], key=lambda r: r["test_acc"])
    assert best is sgd["results"][0] and runs["reptile"]["test_acc"] == min(r["test_acc"] for r in runs.values())
    # the claims: differences and whether the two 1000-task intervals are apart
    acc = {m: r["test_acc"] for m, r in runs.items()}
    apart = lambda a, b: abs(acc[a] - acc[b]) > runs[a]["test_acc_ci95"] + runs[b]["test_acc_ci95"]
    found = re.search(r"\(\+(" + NUMBER + r") points\) and (" + NUMBER + r") ± (" + NUMBER + r") \(\+(" + NUMBER
                      + r") points\), and UFOM is above FOM \((" + NUMBER + r") ± (" + NUMBER + r"), \+(" + NUMBER
                      + r") points\), none of these intervals overlapping; Adaptive UFOM's lead over UFOM \((" + NUMBER
                      + r") points\) is within the intervals", flat)
    check(found[1], acc["adaptive-ufom"] - acc["fom"], "Adaptive UFOM − FOM")
    check(found[4], acc["adaptive-ufom"] - acc["recompute"], "Adaptive UFOM − exact")
    check(found[7], acc["ufom"] - acc["fom"], "UFOM − FOM")
    check(found[8], acc["adaptive-ufom"] - acc["ufom"], "Adaptive UFOM − UFOM")
    assert apart("adaptive-ufom", "fom") and apart("adaptive-ufom", "recompute") and apart("ufom", "fom")
    assert not apart("adaptive-ufom", "ufom")
    below = re.search(r"\*below\* FOM here, by (" + NUMBER + r") points \((" + NUMBER + r") ± (" + NUMBER + r") against ("
                      + NUMBER + r") ± (" + NUMBER + r"), intervals apart\)", flat)
    check(below[1], acc["fom"] - acc["recompute"], "FOM − exact")
    for printed, value in zip(below.groups()[1:], (acc["recompute"], runs["recompute"]["test_acc_ci95"], acc["fom"],
                                                   runs["fom"]["test_acc_ci95"])):
        check(printed, value, "exact and FOM")
    assert acc["recompute"] < acc["fom"] and apart("fom", "recompute")
    # the budget: calls per outer step and per task, outer steps taken
    per_task = lambda r: (r["grad_evals"] + r["hvps"] + r["jvps"]) / r["steps"] / cfg["meta_batch"]
    cost = re.search(r"spends (" + NUMBER + r") function calls per outer step against FOM's (" + NUMBER + r") \(per task: "
                     r"r \+ 2 = (" + NUMBER + r") for FOM .* and (" + NUMBER + ") for exact", flat)
    check(cost[1], runs["recompute"]["function_calls"] / runs["recompute"]["steps"], "exact's calls per step")
    check(cost[2], runs["fom"]["function_calls"] / runs["fom"]["steps"], "FOM's calls per step")
    check(cost[3], per_task(runs["fom"]), "FOM's calls per task")
    check(cost[4], per_task(runs["recompute"]), "exact's calls per task")
    assert (f"it took {runs['recompute']['steps']} outer steps to FOM's {runs['fom']['steps']}" in flat)
    # the curves: 200-task points at every tenth of the budget
    by = fewshot_curves("fewshot")
    assert all(len(c) == 10 for c in by.values())
    tenth = lambda calls: round(calls / 20000) * 20000
    point = lambda m, calls: next(p for p in by[m] if tenth(p[0]) == calls)
    check_range(re.search(r"their 95% intervals are ±(" + NUMBER + "-" + NUMBER + ")", flat)[1],
                [p[2] for c in by.values() for p in c], "curve intervals")
    early = re.search(r"FOM learns fastest at first \((" + NUMBER + r") % at (" + NUMBER + r") calls, when exact has ("
                      + NUMBER + r") %\) and then rises slowly, (" + NUMBER + "-" + NUMBER + r") % from (" + NUMBER
                      + ") calls on", flat)
    at_calls = int(early[2].replace(",", ""))
    check(early[1], point("fom", at_calls)[1], "FOM early")
    check(early[3], point("recompute", at_calls)[1], "exact early")
    assert point("fom", at_calls)[1] == max(point(m, at_calls)[1] for m in by)
    level_from = int(early[5].replace(",", ""))
    check_range(early[4], [p[1] for p in by["fom"] if tenth(p[0]) >= level_from], "FOM's level")
    cross = re.search(r"both are below FOM at (" + NUMBER + r") calls and above it from (" + NUMBER + ") on", flat)
    before, after = (int(c.replace(",", "")) for c in cross.groups())
    for m in ("ufom", "adaptive-ufom"):
        assert point(m, before)[1] < point("fom", before)[1], m
        assert all(p[1] > point("fom", tenth(p[0]))[1] for p in by[m] if tenth(p[0]) >= after), m
    rising = re.search(r"still rising \((" + NUMBER + r") % at (" + NUMBER + r") calls, (" + NUMBER + r") % at ("
                       + NUMBER + r")\)", flat)
    check(rising[1], point("recompute", int(rising[2].replace(",", "")))[1], "exact's curve")
    check(rising[3], point("recompute", int(rising[4].replace(",", "")))[1], "exact's last curve point")
    # Reptile: Nichol et al.'s schedule against ours, its curve, the variants
    steps = re.search(r"\((" + NUMBER + r") outer steps of (" + NUMBER + r") calls, .* where their schedule runs ("
                      + NUMBER + r") outer steps \((" + NUMBER + r") million gradient evaluations, (" + NUMBER
                      + r")× ours\); (" + NUMBER + ") s of outer steps", flat)
    reptile = runs["reptile"]
    assert int(steps[1]) == reptile["steps"]
    check(steps[2], reptile["function_calls"] / reptile["steps"], "Reptile's calls per step")
    theirs = int(steps[3].replace(",", "")) * cfg["meta_batch"] * cfg["steps"]
    check(steps[4], theirs / 1e6, "Nichol et al.'s gradient evaluations")
    check(steps[5], theirs / reptile["grad_evals"], "their schedule against ours")
    check(steps[6], reptile["seconds"], "Reptile's seconds")
    curve = re.search(r"\((" + NUMBER + r") % at (" + NUMBER + r") calls, (" + NUMBER + r") % at (" + NUMBER
                      + r")\): with steps of 5e-4", flat)
    check(curve[1], point("reptile", int(curve[2].replace(",", "")))[1], "Reptile's curve")
    check(curve[3], point("reptile", int(curve[4].replace(",", "")))[1], "Reptile's curve at the end")
    check(re.search(r"step sizes on (" + NUMBER + r") % of their schedule", flat)[1],
          100 * reptile["grad_evals"] / theirs, "share of their schedule")
    variant = re.search(r"It reaches (" + NUMBER + r") % at (" + NUMBER + r") calls, above every other method at twice "
                        r"that budget \(Adaptive UFOM (" + NUMBER + r") %, FOM (" + NUMBER + r") %\) and far above FOM's "
                        r"curve at (" + NUMBER + r") calls \((" + NUMBER + r") %\)", flat)
    check(variant[1], sgd["results"][0]["test_acc"], "SGD variant")
    assert int(variant[2].replace(",", "")) == sgd["results"][0]["function_calls"]
    assert 2 * sgd["results"][0]["function_calls"] == cfg["budget_calls"]
    check(variant[3], acc["adaptive-ufom"], "Adaptive UFOM")
    check(variant[4], acc["fom"], "FOM")
    check(variant[6], point("fom", int(variant[5].replace(",", "")))[1], "FOM's curve at the variant's budget")
    middle, run = re.search(r"CPU\), reaches (" + NUMBER + r") ± (" + NUMBER + r") % at (" + NUMBER + r") calls, level "
                            r"with FOM at twice that budget \((" + NUMBER + r") ± (" + NUMBER + r")\) and above exact \(("
                            + NUMBER + r") ± (" + NUMBER + r")\)", flat), adam["results"][0]
    for printed, value in zip(middle.groups(), (run["test_acc"], run["test_acc_ci95"], run["function_calls"], acc["fom"],
                                                runs["fom"]["test_acc_ci95"], acc["recompute"],
                                                runs["recompute"]["test_acc_ci95"])):
        check(printed, value, "Adam 5e-3 variant against FOM and exact")
    assert abs(run["test_acc"] - acc["fom"]) < run["test_acc_ci95"] + runs["fom"]["test_acc_ci95"]  # level
    assert run["test_acc"] - run["test_acc_ci95"] > acc["recompute"] + runs["recompute"]["test_acc_ci95"]  # above

def test_ufom_exact_branch_table_in_the_benchmarks_page():
    """docs/benchmarks.md's exact-branch table is benchmarks/results/ufom-exact-branch's run, row by row."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    part = text[text.index("### UFOM's exact branch"):]
    rows = table(part, "exact branch")
    runs = {r["exact"]: r for r in json.loads((ROOT / "benchmarks" / "results" / "ufom-exact-branch"
                                               / "ufom_exact_branch.json").read_text())}
    assert len(rows) == len(runs) == 4
    for label, row in rows.items():
        run = runs[label.split("`")[1]]
        assert int(row["states held"]) == run["states"]
        check(numbers(row["C_rnd (backward gradients + HVPs)"])[-1], run["C_rnd"], f"{label} C_rnd")
        for column, key in (("q*", "q_star"), ("UFOM expected calls per step", "ufom_calls_per_step"),
                            ("calls to target at q*", "calls_to_target_qstar"), ("at q = 1", "calls_to_target_q1")):
            check(numbers(row[column])[0], run[key], f"{label} {column}")
        q, calls = numbers(row["best grid q: calls"])
        check(q, run["q_grid"], f"{label} grid q")
        check(calls, run["calls_to_target_q_grid"], f"{label} grid calls")
    fewer = re.search(r"in (" + NUMBER + r") expected\s+function calls, with recomputation and its q\* in\s+("
                      + NUMBER + r"): (\d+) % fewer", part)
    check(fewer[1], runs["checkpointed"]["calls_to_target_qstar"], "checkpointed calls")
    check(fewer[2], runs["recompute"]["calls_to_target_qstar"], "recompute calls")
    check(fewer[3], 100 * (1 - runs["checkpointed"]["calls_to_target_qstar"] / runs["recompute"]["calls_to_target_qstar"]),
          "% fewer")


def test_scaled_down_mlp_fresh_seeds():
    """The scaled-down MLP hypercleaning bullet: means and sd over the fresh seeds 10-14 and the paired
    Adaptive UFOM − exact difference with its 95% t-interval, from the committed run."""
    from scipy import stats

    flat = " ".join(section("Data hypercleaning, two-layer MLP").split())
    s = summary("hypercleaning-mlp-fresh")
    assert s["config"]["seeds"] == [10, 11, 12, 13, 14] and not set(s["config"]["tuned_seeds"]) & {10, 11, 12, 13, 14}
    acc = {m: {r["seed"]: r["test_acc"] for r in s["results"] if r["method"] == m}
           for m in ("recompute", "fom", "adaptive-ufom")}
    bullet = re.search(r"exact \(`recompute`\) (" + NUMBER + r") ± (" + NUMBER + r") \(sd\), FOM (" + NUMBER + r") ± ("
                       + NUMBER + r"), Adaptive UFOM (" + NUMBER + r") ± (" + NUMBER + r"); paired by seed, Adaptive "
                       r"UFOM − exact = \*\*\+(" + NUMBER + r") points, 95% interval \[(" + NUMBER + r"), \+(" + NUMBER
                       + r")\]\*\*", flat)
    for i, m in enumerate(("recompute", "fom", "adaptive-ufom")):
        v = list(acc[m].values())
        check(bullet[1 + 2 * i], np.mean(v), f"{m} mean")
        check(bullet[2 + 2 * i], np.std(v, ddof=1), f"{m} sd")
    d = np.array([acc["adaptive-ufom"][k] - acc["recompute"][k] for k in acc["recompute"]])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    check(bullet[7], d.mean(), "paired mean")
    check(bullet[8], d.mean() - half, "interval low")
    check(bullet[9], d.mean() + half, "interval high")
