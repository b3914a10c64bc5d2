"""Loaders for the standard dataset formats the experiments read (numpy out, no JAX).

* :mod:`.mnist` — MNIST IDX files, gzipped or not;
* :mod:`.omniglot` — Omniglot as the ``images_*.npz`` arrays or the official folders of PNGs;
* :mod:`.newsgroups` — 20 Newsgroups "bydate" (folders or the tar.gz), TF-IDF features, sparse;
* :mod:`.digits` — scikit-learn's bundled 8x8 digits, the default when no data directory is given.

Every loader raises ``FileNotFoundError`` naming what it looked for when files are missing and
:class:`ablo.errors.DataError` (a ValueError) naming the file when one is corrupt, truncated,
empty or a folder. :mod:`.content` lists the files each loader reads (what a run's manifest
fingerprints) and names a dataset by the digests of its files.
"""

from .digits import load_digits
from .mnist import load_mnist, read_idx
from .newsgroups import load_newsgroups
from .omniglot import load_omniglot

__all__ = ["load_digits", "load_mnist", "read_idx", "load_newsgroups", "load_omniglot"]
