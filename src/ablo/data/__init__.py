"""Loaders for the standard dataset formats the experiments read (numpy out, no JAX).

* :mod:`.mnist` — MNIST IDX files, gzipped or not;
* :mod:`.omniglot` — Omniglot as the ``images_*.npz`` arrays or the official folders of PNGs;
* :mod:`.newsgroups` — 20 Newsgroups "bydate" (folders or the tar.gz), TF-IDF features, sparse;
* :mod:`.digits` — scikit-learn's bundled 8x8 digits, the default when no data directory is given.

Every loader raises ``FileNotFoundError`` naming what it looked for when files are missing and
``ValueError`` naming the file when one is corrupt or truncated.
"""

from .digits import load_digits
from .mnist import load_mnist, read_idx
from .newsgroups import load_newsgroups
from .omniglot import load_omniglot

__all__ = ["load_digits", "load_mnist", "read_idx", "load_newsgroups", "load_omniglot"]
