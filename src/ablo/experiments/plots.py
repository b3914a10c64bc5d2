"""Every curve plot of the experiments, in one style: axis labels with units
(:func:`ablo.results.axis_label`), one legend for the figure below its panels, methods in the
order given (K-RMD in numeric order of K: :func:`method_order`), the mean over seeds with the
spread (min to max) as a band where there are several, a log scale where one line would squeeze
the others into a sliver, [0, 1] for F1, a chance line where one exists, and titles wrapped so
that no text overlaps another (tests/test_plots.py renders and compares text bounding boxes).
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Optional, Sequence

import numpy as np

from ..results import axis_label, figure_legend, natural_key, save_figure
from ..estimators.registry import spec_of
from ..config import estimator

#: Fixed axis ranges: F1 is a fraction, accuracies in percent.
LIMITS = {"f1": (-0.02, 1.02)}


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def depth(spec: str, steps: int) -> Optional[int]:
    """How many inner steps ``spec`` back-propagates through: K for K-RMD (``truncated-K``), the
    whole ``steps`` for an exact estimator, None for the others."""
    est = estimator(spec)
    return steps if est.exact_at(steps) else getattr(est, "K", None)


#: Legend names of estimators, as the papers write them.
NAMES = {"fom": "FOM", "ufom": "UFOM", "adaptive-ufom": "Adaptive UFOM", "itd-bio": "ITD-BiO", "aid-bio": "AID-BiO",
         "aid-cg": "AID-BiO (CG)", "stocbio": "stocBiO", "reptile": "Reptile"}


def method_label(spec: str, steps: int) -> str:
    """The legend and table label of a method, in Shaban et al. 2019's words for K-RMD: "5-RMD", "full
    RMD (K = T = 100)" for an exact estimator; else the estimator's name as the papers write it with
    the options that differ from its defaults (:func:`ablo.estimators.registry.spec_of`)."""
    K = depth(spec, steps)
    if K is not None:
        return f"{K}-RMD" if K < steps else f"full RMD (K = T = {steps})"
    est = estimator(spec)
    options = spec_of(est)[len(est.name) + 1:]
    return NAMES.get(est.name, est.name) + (f" ({options.replace(',', ', ')})" if options else "")


def method_order(specs: Sequence[str], steps: int) -> list:
    """``specs`` in increasing depth K (exact as K = T), then the other methods as given."""
    rank = {spec: i for i, spec in enumerate(specs)}
    key = lambda spec: (depth(spec, steps) is None, depth(spec, steps) or 0, rank[spec])
    return sorted(specs, key=key)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _squeezed(lines: Sequence[np.ndarray]) -> bool:
    """True when the data are positive and one line's values sit so far from the others that a
    linear axis would flatten them (the range spans more than two decades)."""
    values = np.concatenate([v[np.isfinite(v)] for v in lines]) if lines else np.array([])
    return values.size > 0 and values.min() > 0 and values.max() / values.min() > 100


def curve_figure(rows: Sequence[Mapping], *, x: str, ys: Sequence[str], group: str = "method", title: str = "",
                 order: Optional[Sequence] = None, labels: Optional[Mapping] = None, log_y: Sequence[str] = (),
                 chance: Optional[Mapping[str, float]] = None, seed: str = "seed", styles: Optional[Mapping] = None,
                 axis: Optional[Mapping[str, str]] = None):
    """A matplotlib figure: one panel per metric in ``ys`` against ``x``, one line per value of
    ``group`` (in ``order``, else in natural order; legend text from ``labels``), the mean over
    ``seed`` (the first n points of each seed, n the fewest any seed has) with the min-max band
    where there are several (the legend counts them by that key's name: "3 seeds", "3 trials").
    Panels in ``log_y``, or whose lines span more than two decades, are on a log scale; ``chance`` draws a dotted line at {metric: value}; ``styles`` {group value:
    line style}; ``axis`` {field: axis label} overrides :func:`ablo.results.axis_label`. Rows lacking
    a metric are skipped for it."""
    plt = pyplot()
    groups: dict = {}
    for r in rows:
        groups.setdefault(r.get(group), []).append(r)
    names = list(order) if order is not None else sorted(groups, key=natural_key)
    names = [g for g in names if g in groups]
    fig, axes = plt.subplots(1, len(ys), figsize=(4.6 * len(ys), 4.0), squeeze=False)
    for ax, y in zip(axes[0], ys):
        means = []
        for i, name in enumerate(names):
            by_seed: dict = {}
            for r in groups[name]:
                if r.get(y) is not None and r.get(x) is not None:
                    by_seed.setdefault(r.get(seed), []).append((r[x], r[y]))
            if not by_seed:
                continue
            n = min(len(v) for v in by_seed.values())
            pts = np.array([v[:n] for v in by_seed.values()], float)  # (seeds, n, 2)
            xs, mean = pts[..., 0].mean(0), pts[..., 1].mean(0)
            color = f"C{i % 10}"
            ax.plot(xs, mean, (styles or {}).get(name, "-"), color=color, marker="." if n < 30 else None, lw=1.4,
                    label=str((labels or {}).get(name, name)) + (f" (mean of {len(by_seed)} {seed}s)"
                                                                if len(by_seed) > 1 else ""))
            if len(by_seed) > 1:
                ax.fill_between(xs, pts[..., 1].min(0), pts[..., 1].max(0), color=color, alpha=0.2, lw=0)
            means.append(pts[..., 1].ravel())
        if chance and y in chance:
            ax.axhline(chance[y], color="grey", ls=":", lw=1.0, label=f"chance ({chance[y]:.3g})")
        if y in log_y or (y not in LIMITS and _squeezed(means)):
            ax.set_yscale("log")
        if y in LIMITS:
            ax.set_ylim(*LIMITS[y])
        name = lambda f: (axis or {}).get(f) or axis_label(f)
        ax.set_xlabel(_wrap(name(x), 45))
        ax.set_ylabel(_wrap(name(y), 40))
        ax.grid(alpha=0.3)
        if max(abs(v) for v in ax.get_xlim()) >= 1e4:  # 200k, not 200000: six-digit tick labels run together
            from matplotlib.ticker import EngFormatter

            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    if title:
        fig.suptitle(_wrap(title, int(60 * len(ys))), fontsize=9)
    figure_legend(fig, ncol=min(len(names) + bool(chance), 4))
    return fig


def plot_curves(rows: Sequence[Mapping], path, **options):
    """:func:`curve_figure` of ``rows`` saved as PNG at ``path`` (atomically)."""
    return save_figure(curve_figure(rows, **options), path)


def bar_figure(rows: Sequence[Mapping], *, value: str, label: str = "method", group: str = "problem",
               order: Optional[Sequence] = None, titles: Optional[Mapping] = None, axis: Optional[str] = None):
    """Horizontal bars of ``value`` for each ``label`` on a log axis, one stacked panel per value of
    ``group`` (in ``order``, else as they first appear; its title from ``titles``, else the value), rows in
    the order given, the first on top, each labelled with its value; rows whose value is missing or
    not positive are left out (ValueError when none is left)."""
    plt = pyplot()
    groups: dict = {}
    for r in rows:
        if r.get(value) is not None and r[value] > 0:
            groups.setdefault(r.get(group), []).append(r)
    names = [g for g in (order if order is not None else groups) if g in groups]
    if not names:
        raise ValueError(f"bar_figure: no row has a positive {value!r}; nothing to draw")
    heights = [0.9 + 0.28 * len(groups[g]) for g in names]
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 0.6 + sum(heights)), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": heights})
    for ax, name in zip(axes[:, 0], names):
        values = [r[value] for r in groups[name]]
        ax.bar_label(ax.barh([str(r.get(label)) for r in groups[name]], values), fmt="%.3g", padding=3, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(right=max(values) * 4)  # room for the value labels
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # within a decade minor labels collide
        ax.invert_yaxis()
        ax.set_xlabel(_wrap(axis or axis_label(value), 80), fontsize=9)
        ax.set_title(_wrap(str((titles or {}).get(name, name)), 80), fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    return fig
