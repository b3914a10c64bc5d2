"""scikit-learn's bundled digits (1,797 8x8 images, 10 classes): real data with no download."""

from __future__ import annotations

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(x, y): x float32 (1797, 64) scaled to [0, 1], y int32 labels 0-9."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)
