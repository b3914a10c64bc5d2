"""The README's main job (``ablo demo``): data hypercleaning (Likhosherstov et al. 2021 §5.2) on scikit-learn's
bundled digits, so it needs no download. A two-layer ReLU net is trained by r = 20 inner GD
steps on 600 examples, half of them mislabelled; θ weighs each example by σ(θ_i); the exact
hypergradient (``recompute``), FOM, UFOM (q = 0.1) and Adaptive UFOM each get the same budget
of function calls (gradient evaluations + HVPs + JVPs). It is the ``hypercleaning``
experiment with the defaults below (its :class:`Config` is hypercleaning's with other
defaults); its summary.json therefore says "hypercleaning".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from . import Experiment, hypercleaning, register

_PARENT = {f.name: f for f in dataclasses.fields(hypercleaning.Config)}


def _default(name: str, value):
    """hypercleaning's config field ``name`` (type, range, help) with another default."""
    return dataclasses.field(default=value, metadata=_PARENT[name].metadata)


@dataclass(frozen=True)
class Config(hypercleaning.Config):
    """hypercleaning's config with the demo's defaults: the MLP on digits, one seed, exact, FOM,
    UFOM and Adaptive UFOM at 12,000 function calls each; digits even when MNIST is fetched (it
    is the no-download demo: give data_dir to run it on MNIST)."""

    DATASET = None
    model: str = _default("model", "mlp")
    n_train: Optional[int] = _default("n_train", 600)
    n_val: Optional[int] = _default("n_val", 600)
    methods: Optional[tuple[str, ...]] = _default("methods", ("recompute", "fom", "ufom", "adaptive-ufom"))
    seeds: Optional[tuple[int, ...]] = _default("seeds", (0,))
    budget_calls: Optional[float] = _default("budget_calls", 12_000.0)


TINY = {**hypercleaning.TINY, "methods": ("recompute", "fom", "ufom", "adaptive-ufom")}

EXPERIMENT = register(Experiment("demo", hypercleaning.run, Config, TINY,
                                 "the README demo: hypercleaning on scikit-learn digits, exact vs FOM vs UFOM vs "
                                 "Adaptive UFOM at an equal function-call budget"))
