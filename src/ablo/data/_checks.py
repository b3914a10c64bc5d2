"""Checks every loader applies to what it read: bad data is refused with the file's name."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def check_pixels(images: np.ndarray, path, top: float) -> None:
    """Raise DataError naming ``path`` unless every pixel is finite and in [0, ``top``]."""
    bad = ~np.isfinite(images)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: {int(bad.sum())} non-finite pixel(s) (NaN or inf), the first at index {where}; "
                         f"the file is corrupt: download it again")
    lo, hi = float(images.min(initial=0)), float(images.max(initial=0))
    if lo < 0 or hi > top:
        raise DataError(f"{path}: pixel values span [{lo:g}, {hi:g}], expected [0, {top:g}]")


def check_labels(labels: np.ndarray, n_classes: int, path) -> None:
    """Raise DataError naming ``path`` unless every label is an integer in [0, ``n_classes``)."""
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: labels of type {labels.dtype}, expected integers 0..{n_classes - 1}")
    outside = (labels < 0) | (labels >= n_classes)
    if outside.any():
        i = int(np.argmax(outside))
        raise DataError(f"{path}: {int(outside.sum())} label(s) outside 0..{n_classes - 1}, the first "
                         f"{int(labels.flat[i])} at index {i}")
