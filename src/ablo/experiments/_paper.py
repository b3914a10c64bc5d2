"""The papers' reported figures, shown beside ours by ``ablo compare`` (SPEC §2).

* Shaban et al. 2019 Table 2 (hypercleaning, linear model, 1000 hyperiterations): test and validation
  accuracy (%), validation loss and F1 per truncation depth K;
* Likhosherstov et al. 2021 Table 1 (hypercleaning, two-layer MLP, equal function-call budgets): train
  accuracy on the uncorrupted part (%), test accuracy (%), test cross-entropy;
* Likhosherstov et al. 2021 Table 2 (Omniglot 1-shot, test accuracy %), 30- and 40-way.

The figures are given only for runs on the papers' data and protocol
(:func:`hypercleaning_figures_withheld`, :func:`fewshot_figures_withheld` say why not otherwise).
"""

from __future__ import annotations

from typing import Mapping

HYPERCLEANING_LINEAR = {1: {"test_acc": 87.50, "val_acc": 89.32, "val_ce": 0.413, "f1": 0.85},
                        5: {"test_acc": 88.05, "val_acc": 89.90, "val_ce": 0.383, "f1": 0.89},
                        25: {"test_acc": 88.12, "val_acc": 89.94, "val_ce": 0.382, "f1": 0.89},
                        50: {"test_acc": 88.17, "val_acc": 90.18, "val_ce": 0.381, "f1": 0.89},
                        100: {"test_acc": 88.33, "val_acc": 90.24, "val_ce": 0.380, "f1": 0.88}}
HYPERCLEANING_MLP = {"exact": {"train_clean_acc": 94.07, "test_acc": 90.82, "test_ce": 0.4795},
                     "fom": {"train_clean_acc": 92.04, "test_acc": 90.83, "test_ce": 0.3187},
                     "adaptive-ufom": {"train_clean_acc": 95.27, "test_acc": 92.24, "test_ce": 0.2811}}
FEWSHOT_OMNIGLOT_1SHOT = {30: {"exact": 91.6, "reptile": 83.1, "fom": 89.3, "adaptive-ufom": 92.0},
                          40: {"exact": 87.5, "reptile": 78.2, "fom": 84.88, "adaptive-ufom": 89.1}}
EXACT = ("reverse", "recompute", "checkpointed", "forward")  # the papers' "exact" is any of these
#: The hypercleaning protocol of both papers (Shaban et al. 2019, §4.2.1 and App. G.1, Likhosherstov et al. 2021, §5.2): 28x28 MNIST (60k/10k
#: images), 5000 training and 5000 validation examples, r = 100; Shaban et al. 2019 replaces each training label with
#: probability 1/2 by a uniformly random one and tests on the rest of MNIST, Likhosherstov et al. 2021 corrupt 2500 labels.
HYPERCLEANING_PROTOCOL = {"n_train": 5000, "n_val": 5000, "corrupt": 0.5, "steps": 100}
HYPERCLEANING_MODEL_PROTOCOL = {"linear": {"corruption": "uniform", "test_set": "rest", "outer_steps": 1000,
                                           "budget_calls": None, "schedule": "inv-sqrt", "decay_bias": True,
                                           "l2": 0.001 / 5000},  # λ = 0.001/n on the mean (App. G.1's ratio)
                                "mlp": {"corruption": "wrong"}}


def hypercleaning_figures_withheld(config: Mapping) -> str:
    """Why the papers' hypercleaning figures do not apply to a run with ``config`` (a summary's
    resolved config, with its ``dataset`` description); "" when data and protocol are the papers'."""
    d = config.get("dataset") or {}
    if d.get("name") != "MNIST" or (d.get("train_images"), d.get("test_images"), d.get("image_size")) != (
            60000, 10000, 28):
        read = d.get("name", "unknown data") + (f" ({d.get('train_images')}/{d.get('test_images')} images, "
                                                f"{d.get('image_size')}x{d.get('image_size')})"
                                                if d.get("name") == "MNIST" else "")
        return f"they are for 28x28 MNIST with 60000/10000 images, this run read {read}"
    protocol = {**HYPERCLEANING_PROTOCOL, **HYPERCLEANING_MODEL_PROTOCOL.get(config.get("model"), {})}
    same = lambda a, b: (a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-12 * abs(b)))
    say = lambda v: "no limit" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
    differ = [f"{k} = {say(config.get(k))} (paper: {say(v)})" for k, v in protocol.items() if not same(config.get(k), v)]
    return f"the protocol differs: {', '.join(differ)}" if differ else ""


def fewshot_figures_withheld(config: Mapping) -> str:
    """Why Likhosherstov et al. 2021 Table 2 does not apply to a few-shot run with ``config`` (a summary's
    resolved config with its ``dataset``); "" when it does (Omniglot at 28x28, 1-shot, 30 or 40 ways)."""
    d = config.get("dataset") or {}
    differ = ([] if d.get("name") == "Omniglot" else [f"data {d.get('name', 'unknown')} (paper: Omniglot)"]) + [
        f"{k} = {config.get(k)} (paper: {v})" for k, v in (("size", 28), ("shots", 1)) if config.get(k) != v]
    if config.get("ways") not in FEWSHOT_OMNIGLOT_1SHOT:
        differ.append(f"ways = {config.get('ways')} (paper: {' or '.join(map(str, FEWSHOT_OMNIGLOT_1SHOT))})")
    return f"the protocol differs: {', '.join(differ)}" if differ else ""


def reference(experiment: str, config: Mapping, row: Mapping) -> dict:
    """The paper's figures for the setting of ``row`` (keys prefixed "paper_"), {} when none."""
    method = row.get("estimator", row.get("method"))
    method = "exact" if method in EXACT else method
    figures: dict = {}
    if experiment == "hypercleaning" and not hypercleaning_figures_withheld(config):
        model = row.get("model", config.get("model"))
        if model == "linear":
            K = row.get("K")
            full = method == "exact" or (K is not None and K == config.get("steps"))
            figures = HYPERCLEANING_LINEAR.get(100 if full else K, {})  # the paper's T = 100
        elif model == "mlp":
            figures = HYPERCLEANING_MLP.get(method, {})
    elif experiment == "fewshot" and not fewshot_figures_withheld(config):
        acc = FEWSHOT_OMNIGLOT_1SHOT[config["ways"]].get(method)
        figures = {} if acc is None else {"test_acc": acc}
    return {f"paper_{k}": v for k, v in figures.items()}
