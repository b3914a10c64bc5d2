"""The shared plotting helpers of ablo.results: numeric label order, one figure legend that covers
every line and overlaps no panel, axis labels with units."""

import matplotlib
import numpy as np

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


def test_toy2d_legend_order_is_numeric_in_K():
    from ablo.experiments.toy2d import method_label, plot_order

    order = plot_order(["truncated-25", "reverse", "truncated-5", "truncated-1"], 100)
    assert order == ["truncated-1", "truncated-5", "truncated-25", "reverse"]
    assert [method_label(s, 100) for s in order] == ["K = 1", "K = 5", "K = 25", "K = T = 100 (exact)"]
