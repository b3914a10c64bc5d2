"""The README's main job (``ablo demo``): data hypercleaning (paper 000 §5.2) on scikit-learn's
bundled digits, so it needs no download. A two-layer ReLU net is trained by r = 20 inner GD
steps on 600 examples, half of them mislabelled; θ weighs each example by σ(θ_i); the exact
hypergradient (``recompute``), FOM, UFOM (q = 0.1) and Adaptive UFOM each get the same budget
of function calls (gradient evaluations + HVPs + JVPs). It is the ``hypercleaning``
experiment with the settings below; its summary.json therefore says "hypercleaning".
"""

from __future__ import annotations

from . import Experiment, hypercleaning, register

DEFAULTS = {**hypercleaning.DEFAULTS, "model": "mlp", "data_dir": None, "seeds": [0], "n_train": 600, "n_val": 600,
            "methods": ["recompute", "fom", "ufom", "adaptive-ufom"], "budget_calls": 12_000}


def run(config: dict, out_dir, progress) -> dict:
    return hypercleaning.run(config, out_dir, progress)


EXPERIMENT = register(Experiment("demo", run, DEFAULTS, hypercleaning.TINY,
                                 "the README demo: hypercleaning on scikit-learn digits, exact vs FOM vs UFOM vs "
                                 "Adaptive UFOM at an equal function-call budget"))
