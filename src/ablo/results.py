"""Result files every experiment writes, atomically (temp file + rename): summary.json
({"experiment", "config", "results": one row per method and seed}), CSV curves, Markdown
tables. A kill never leaves a truncated file."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .atomic import atomic_write


def jsonable(x):
    """``x`` as plain JSON values: arrays as lists, non-finite floats as None, keys as strings."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy / jax arrays and scalars
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_summary(out_dir, experiment: str, config: Mapping, results: Sequence[Mapping]) -> Path:
    """summary.json: {"experiment": name, "config": {...}, "results": [row per method and seed]}."""
    doc = {"experiment": experiment, "config": jsonable(config), "results": jsonable(list(results))}
    return atomic_write(Path(out_dir) / "summary.json", json.dumps(doc, indent=2, sort_keys=False) + "\n")


def read_summary(path) -> dict:
    """The summary.json of a run folder (or the file itself) as a dict; ValueError naming the file
    when it is missing or not valid JSON."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no summary.json at {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None


def by_method(rows: Sequence[Mapping], metrics: Sequence[str], spread: Sequence[str] = ()) -> list:
    """One table row per method (in the order of ``rows``): ``seeds`` (the rows it has), the mean of
    each of ``metrics`` over them (None when no row has it; NaN stays NaN, visibly) and, for those in
    ``spread`` with more than one value, ``<metric>_std``, the sample standard deviation (ddof = 1)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    table = []
    for method, rs in groups.items():
        t = {"method": method, "seeds": len(rs)}
        for k in metrics:
            v = [r[k] for r in rs if r.get(k) is not None]
            t[k] = float(sum(v) / len(v)) if v else None
            if k in spread and len(v) > 1:
                t[k + "_std"] = math.sqrt(sum((x - t[k]) ** 2 for x in v) / (len(v) - 1))
        table.append(t)
    return table


def write_csv(path, rows: Iterable[Mapping]) -> Path:
    """Write ``rows`` (dicts) as CSV, atomically: the columns are the union of the rows' keys in
    first-seen order, a missing key an empty cell, arrays as lists, non-finite floats empty."""
    rows = list(rows)
    cols: list = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: jsonable(v) for k, v in r.items()})
    return atomic_write(path, buf.getvalue())


def number(v, digits: int = 4) -> str:
    """A number as people read it: whole values and values of 1000 or more without exponent and
    with thousands separators (12,010), others with ``digits`` significant digits (0.4795, 2.3e-05),
    non-finite as nan/inf; None as "", anything else as str."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        return str(v)
    x = float(v)
    if not math.isfinite(x):
        return str(x)
    return f"{x:,.0f}" if abs(x) >= 1000 or x == int(x) else f"{x:.{digits}g}"


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns`` (default: the union of their keys in
    first-seen order); floats with 4 significant digits, None and missing keys as empty cells."""
    rows = list(rows)
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(number(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_markdown(path, title: str, rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                   notes: str = "") -> Path:
    """Write ``# title``, :func:`markdown_table` of ``rows`` and ``notes`` to ``path`` atomically."""
    text = f"# {title}\n\n" + markdown_table(rows, columns) + (f"\n{notes.strip()}\n" if notes else "")
    return atomic_write(path, text)


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_write(path, buf.getvalue())


#: Axis labels with units for the fields of the result rows and curves (see :func:`axis_label`).
AXIS_LABELS = {
    "function_calls": "function calls (gradient evaluations + HVPs + JVPs)",
    "test_acc": "test accuracy (%)",
    "val_acc": "validation accuracy (%)",
    "train_clean_acc": "accuracy on the clean training examples (%)",
    "test_ce": "test cross-entropy (nats)",
    "val_ce": "validation cross-entropy (nats)",
    "val_loss": "validation loss (nats)",
    "f1": "F1 score of the detected corrupted examples (0-1)",
    "seconds": "wall time (s)",
    "step": "outer step",
    "hyper_iterations": "hyper-iterations (outer steps)",
    "outer_loss": "outer loss (nats)",
    "test_loss": "test loss (nats)",
    "true_grad_norm": "‖d‖, norm of the exact hypergradient",
    "descent_ratio": "hᵀd / ‖d‖² (estimate h, exact d)",
    "grad_norm": "‖h‖, norm of the estimate",
}


def axis_label(field: str) -> str:
    """The axis label, with its unit, of a result field (:data:`AXIS_LABELS`), else the field's
    name with spaces."""
    return AXIS_LABELS.get(field, field.replace("_", " "))


def natural_key(label) -> tuple:
    """Sort key ordering the numbers inside labels by value, so K = 1, 5, 25, 50 rather than
    string order 1, 25, 5, 50: ``sorted(specs, key=natural_key)`` puts "truncated-5" before
    "truncated-25" and "q = 0.05" before "q = 0.1"."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(label))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def figure_legend(fig, axes=None, ncol: int | None = None, fontsize: float = 8):
    """One legend for the whole figure, below its panels, holding every labelled line of every
    panel in ``axes`` (default all) once, in order of first appearance: so no panel's legend covers
    its data and no line is missing from the legend. Lays the panels out first (tight_layout)
    so the legend overlaps nothing; :func:`save_figure` keeps it (bbox_inches="tight").
    Returns the Legend."""
    entries: dict = {}
    for ax in (fig.axes if axes is None else axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.tight_layout()
    return fig.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=ncol or min(len(entries), 4) or 1, fontsize=fontsize, frameon=False)
