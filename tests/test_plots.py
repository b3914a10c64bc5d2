"""The shared plotting helpers (ablo.results, ablo.experiments.plots): numeric label order, one
figure legend that covers every line and overlaps no panel, axis labels with units, text that never
overlaps (rendered and compared by bounding box), spread over seeds as a band, [0, 1] for F1, a log
scale where one line would squeeze the others, a chance line."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ablo.results import axis_label, figure_legend, natural_key, save_figure  # noqa: E402


def test_natural_key_orders_numbers_by_value():
    specs = ["truncated-25", "truncated-5", "reverse", "truncated-1", "truncated-50", "truncated-100"]
    assert sorted(specs, key=natural_key) == ["reverse", "truncated-1", "truncated-5", "truncated-25", "truncated-50",
                                               "truncated-100"]
    assert sorted(["K = 25", "K = 5", "K = 1"], key=natural_key) == ["K = 1", "K = 5", "K = 25"]
    assert sorted(["ufom q = 0.1", "ufom q = 0.05", "ufom q = 0.5"], key=natural_key) == [
        "ufom q = 0.05", "ufom q = 0.1", "ufom q = 0.5"]


def test_figure_legend_covers_every_line_once_below_the_panels(tmp_path):
    fig, (a, b) = plt.subplots(1, 2)
    a.plot([0, 1], [0, 1], label="K = 1")
    a.plot([0, 1], [1, 0], label="K = 5")
    b.plot([0, 1], [0, 1], label="K = 1")  # the same method in the second panel: one entry
    b.axhline(0.5, label="fixed point")  # a line only the second panel has
    b.plot([0, 1], [0.2, 0.2])  # unlabelled: not in the legend
    legend = figure_legend(fig)
    assert [t.get_text() for t in legend.get_texts()] == ["K = 1", "K = 5", "fixed point"]
    assert not a.get_legend() and not b.get_legend()
    fig.canvas.draw()
    box = legend.get_window_extent()
    panels = [ax.get_tightbbox() for ax in (a, b)]  # axes with their tick and axis labels
    assert all(box.y1 <= p.y0 + 1e-6 for p in panels)  # below every panel: it hides no data or label
    save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_axis_labels_carry_units():
    assert axis_label("test_acc") == "test accuracy (%)"
    assert "nats" in axis_label("val_ce") and "HVPs" in axis_label("function_calls")
    assert axis_label("some_field") == "some field"


def test_counterexample_zoom_leaves_out_the_early_excursion():
    from ablo.experiments.counterexample import zoom_window

    steps = np.arange(1000)
    theta = np.where(steps < 50, 150.0, 5.76 + 0.01 * np.sin(steps))[None]  # an excursion, then FOM's fixed point
    start, end, lo, hi = zoom_window({"fom": ("fom", theta, steps, None)}, [5.759, 2.840])
    assert (start, end) == (100, 1000)
    assert lo < 2.840 and 5.77 < hi < 7  # both marked points in view, the excursion to 150 out of it


def test_method_order_is_numeric_in_K_and_labels_say_which_depth():
    from ablo.experiments.plots import method_label, method_order

    order = method_order(["truncated-25", "fom", "reverse", "truncated-5", "truncated-1", "ufom:q=0.2"], 100)
    assert order == ["truncated-1", "truncated-5", "truncated-25", "reverse", "fom", "ufom:q=0.2"]
    assert [method_label(s, 100) for s in order] == ["1-RMD", "5-RMD", "25-RMD", "full RMD (K = T = 100)", "FOM",
                                                     "UFOM (q=0.2)"]
    assert method_label("truncated-100", 100) == method_label("recompute", 100) == "full RMD (K = T = 100)"


def _curves(methods, seeds, f1=lambda m, s, k: 0.0, acc=lambda m, s, k: 50.0 + k):
    return [{"method": m, "seed": s, "function_calls": 100.0 * k, "test_acc": acc(m, s, k), "f1": f1(m, s, k),
             "val_ce": 2.0 - 0.01 * k} for m in methods for s in seeds for k in range(10)]


def _drawn_ticks(ax) -> set:
    """The tick labels of ``ax`` that are drawn: those at a location inside the view limits."""
    out = set()
    for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xbound())), (ax.yaxis, sorted(ax.get_ybound()))):
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo):
                out |= {id(tick.label1), id(tick.label2)}
    return out


def _overlaps(fig) -> list:
    """Pairs of drawn, non-empty texts of ``fig`` whose rendered bounding boxes intersect."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks = {id(t) for ax in fig.axes for tick in ax.xaxis.get_major_ticks() + ax.xaxis.get_minor_ticks()
             + ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks() for t in (tick.label1, tick.label2)}
    drawn = set().union(*(_drawn_ticks(ax) for ax in fig.axes))
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()
             and (id(t) not in ticks or id(t) in drawn)]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:]
            if ba.x0 < bb.x1 - 0.5 and bb.x0 < ba.x1 - 0.5 and ba.y0 < bb.y1 - 0.5 and bb.y0 < ba.y1 - 0.5]


def test_curve_plot_text_never_overlaps_even_with_long_titles_and_many_methods():
    from ablo.experiments.plots import curve_figure

    methods = ["recompute", "fom", "adaptive-ufom", "truncated-1", "truncated-25", "ufom:q=0.2"]
    fig = curve_figure(_curves(methods, (0, 1, 2)), x="function_calls", ys=("test_acc", "val_ce", "f1"),
                       title="Hypercleaning (mlp, MNIST): test accuracy on the 10000 test images, mean over seeds "
                             "[100, 101, 102, 103, 104] with a title long enough to run into the panels",
                       chance={"test_acc": 10.0})
    assert _overlaps(fig) == []
    plt.close(fig)


def test_curve_plot_tick_labels_of_large_counts_do_not_run_together():
    """A one-panel figure of function calls up to 200,000 (the few-shot budget): the x tick labels fit."""
    from ablo.experiments.plots import curve_figure

    rows = [dict(r, function_calls=20_000.0 * (r["function_calls"] / 100 + 1)) for r in _curves(["fom", "ufom"], (0,))]
    fig = curve_figure(rows, x="function_calls", ys=("test_acc",), chance={"test_acc": 5.0})
    assert _overlaps(fig) == []
    plt.close(fig)


def test_curve_plot_draws_the_seed_spread_as_a_band_and_f1_on_zero_to_one():
    from ablo.experiments.plots import curve_figure

    fig = curve_figure(_curves(["fom", "recompute"], (0, 1), acc=lambda m, s, k: 50 + k + 3 * s),
                       x="function_calls", ys=("test_acc", "f1"))
    acc, f1 = fig.axes[:2]
    assert len(acc.collections) == 2  # one band per method: the spread over the two seeds
    assert f1.get_ylim()[0] <= 0 and f1.get_ylim()[1] >= 1 and f1.get_ylim()[1] - f1.get_ylim()[0] < 1.1
    assert any("mean of 2 seeds" in t.get_text() for t in fig.legends[0].get_texts())
    plt.close(fig)
    one = curve_figure(_curves(["fom"], (0,)), x="function_calls", ys=("test_acc",))
    assert len(one.axes[0].collections) == 0  # one seed: no band
    plt.close(one)
    trials = [dict(r, trial=r["seed"]) for r in _curves(["fom"], (0, 1, 2))]
    by_trial = curve_figure(trials, x="function_calls", ys=("test_acc",), seed="trial")
    assert any("mean of 3 trials" in t.get_text() for t in by_trial.legends[0].get_texts())  # counted by its key
    plt.close(by_trial)


def test_curve_plot_uses_a_log_scale_when_one_line_would_squeeze_the_others_and_draws_chance():
    from ablo.experiments.plots import curve_figure

    rows = _curves(["fom", "recompute", "adaptive-ufom"], (0,), acc=lambda m, s, k: 1e4 if m == "fom" else 1 + k)
    fig = curve_figure(rows, x="function_calls", ys=("test_acc", "val_ce"), chance={"test_acc": 10.0})
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"
    assert any(line.get_label().startswith("chance") for line in fig.axes[0].get_lines())
    plt.close(fig)


def test_bar_figure_stacks_one_log_panel_per_group_leaves_out_non_positive_values_and_never_overlaps():
    from ablo.experiments.plots import bar_figure

    values = {"weights": (0.003, 0.09), "lr": (0.44, 1.2)}  # lr within a decade: minor ticks would be labelled
    rows = [{"problem": p, "method": m, "v": v} for p in values
            for m, v in zip(("telescope:form=roulette", "es:sigma=0.01,pairs=8", "reverse"), values[p] + (0.0,))]
    rows.append({"problem": "lr", "method": "reversible", "skipped": "noisy-gd"})
    fig = bar_figure(rows, value="v", titles={"lr": "lr problem (dim θ = 1), a title long enough to need wrapping "
                                                    "so that it would run into the panel above it otherwise"})
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    assert fig.axes[0].get_title() == "weights" and fig.axes[1].get_title().startswith("lr problem")
    drawn = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    assert drawn == [["telescope:form=roulette", "es:sigma=0.01,pairs=8"]] * 2  # reverse (0) and skipped left out
    assert [len(ax.patches) for ax in fig.axes] == [2, 2]
    assert [t.get_text() for t in fig.axes[1].texts] == ["0.44", "1.2"]  # the values on the bars
    assert _overlaps(fig) == []
    assert not any(t.get_text() for ax in fig.axes for t in ax.get_xminorticklabels())  # they collide within a decade
    plt.close(fig)
    with pytest.raises(ValueError, match="positive 'v'"):
        bar_figure(rows[2:3], value="v")
