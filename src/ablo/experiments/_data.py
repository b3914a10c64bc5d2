"""Data helpers that several experiments share: random disjoint splits and a generated
stand-in for 20 Newsgroups."""

from __future__ import annotations

import numpy as np


def seeded_split(n: int, sizes: tuple, seed: int) -> list:
    """Disjoint random index sets of the given sizes from range(n)."""
    if sum(sizes) > n:
        raise ValueError(f"the splits need {sum(sizes)} examples but the data has {n}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum((0,) + tuple(sizes))
    return [perm[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def synthetic_corpus(n_train: int, n_test: int, vocabulary: int, length: int, seed: int = 0, classes: int = 20):
    """Generated stand-in for 20 Newsgroups: each class draws words from a shared Zipf background
    (70 %) mixed with its own 30-word topic (30 %); counts → TF-IDF (smooth idf, ℓ2-normalised rows,
    idf from the training part), as scikit-learn's TfidfVectorizer does."""
    rng = np.random.default_rng(seed)
    background = 1.0 / np.arange(1, vocabulary + 1)
    background /= background.sum()
    topics = np.stack([np.bincount(rng.choice(vocabulary, 30, replace=False), minlength=vocabulary) / 30.0
                       for _ in range(classes)])
    n = n_train + n_test
    y = rng.integers(0, classes, n).astype(np.int32)
    counts = np.stack([rng.multinomial(length, 0.7 * background + 0.3 * topics[c]) for c in y]).astype(np.float32)
    df = (counts[:n_train] > 0).sum(0)
    idf = np.log((1 + n_train) / (1 + df)) + 1
    x = counts * idf
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return {"train": (x[:n_train].astype(np.float32), y[:n_train]), "test": (x[n_train:].astype(np.float32), y[n_train:])}
