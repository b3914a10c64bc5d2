"""Sentences that results.md files share: whether a run is a smoke run, whether the paper's
figure may stand beside it, which seeds were tuned on and which are reported, and paired
differences between methods with their intervals."""

from __future__ import annotations

import numpy as np

from ..config import option

SMOKE_HELP = "a smoke run (--tiny sets it): results.md says that its numbers reproduce nothing"


def smoke_option():
    """The ``smoke`` field of a config: False, set to True by the experiment's TINY."""
    return option(False, SMOKE_HELP)


def smoke_note(cfg) -> str:
    """A paragraph saying that this is a smoke run (``cfg.smoke``, or ``cfg["smoke"]`` for a
    resolved dict), or ''."""
    if not (cfg["smoke"] if isinstance(cfg, dict) else cfg.smoke):
        return ""
    return ("**Smoke run** (--tiny: smoke = true): it checks that the pipeline runs; its numbers prove nothing "
            "about the methods or the paper's claims.\n\n")


def paper_note(quote: str, figure: str, dataset: str, real_data: bool, smoke: bool) -> str:
    """``quote`` (the paper's ``figure``, in words) when the run read the paper's ``dataset`` and
    is not a smoke run; otherwise a sentence saying why it is not quoted."""
    if real_data and not smoke:
        return quote
    return f"{figure} is not quoted: this run " + ("is a smoke run." if smoke else f"did not read {dataset}.")


def seeds_note(cfg) -> str:
    """Pre-registration, in words: the seeds the settings were chosen on and the seeds reported."""
    cfg = cfg if isinstance(cfg, dict) else cfg.as_dict()
    reported = cfg.get("seeds") or ([cfg["seed"]] if cfg.get("seed") is not None else [])
    tuned = list(cfg.get("tuned_seeds") or [])
    if cfg.get("smoke") and not tuned:
        return f"Seeds: {list(reported)} (a smoke run reports nothing, so no seeds are held out from tuning)."
    chosen = f"settings chosen on seeds {tuned}" if tuned else "no seeds recorded as used to choose the settings"
    return f"Seeds: {chosen} (tuned_seeds); reported on seeds {list(reported)}, disjoint from them."


def paired_differences(rows, key: str) -> list:
    """[(method, reference, mean difference, 95% interval (lo, hi), seeds)] of ``key`` between each
    method and the first, paired by seed; the interval is Student's t over the seeds (None with
    one seed)."""
    from scipy import stats

    by: dict = {}
    for r in rows:
        if r.get(key) is not None:
            by.setdefault(r["method"], {})[r["seed"]] = r[key]
    if len(by) < 2:
        return []
    (ref, base), *others = by.items()
    out = []
    for method, vals in others:
        diff = np.array([vals[s] - base[s] for s in sorted(set(vals) & set(base))], float)
        if diff.size == 0:
            continue
        half = (stats.t.ppf(0.975, diff.size - 1) * diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else None
        ci = None if half is None else (diff.mean() - half, diff.mean() + half)
        out.append((method, ref, float(diff.mean()), ci, diff.size))
    return out


def paired_note(rows, key: str, lower_is_better: bool = False) -> str:
    """One sentence: each method's difference in ``key`` from the first method, paired by seed,
    with its 95% interval, and whether the interval excludes 0 (the only grounds for "above")."""
    parts = []
    for method, ref, mean, ci, n in paired_differences(rows, key):
        if ci is None:
            parts.append(f"{method} − {ref}: {mean:+.3g} (one seed: no interval)")
            continue
        better = (ci[1] < 0) if lower_is_better else (ci[0] > 0)
        worse = (ci[0] > 0) if lower_is_better else (ci[1] < 0)
        verdict = "better" if better else "worse" if worse else "not distinguishable from 0"
        parts.append(f"{method} − {ref}: {mean:+.3g}, 95% interval [{ci[0]:+.3g}, {ci[1]:+.3g}] over {n} seeds "
                     f"({verdict})")
    return f" {key} paired by seed: " + "; ".join(parts) + "." if parts else ""
