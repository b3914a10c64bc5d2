"""20 Newsgroups, "bydate" split (11,314 train / 7,532 test posts, 20 groups), as TF-IDF.

``data_dir`` holds either the folders ``20news-bydate-train/<group>/<id>`` and
``20news-bydate-test/<group>/<id>`` or the archive ``20news-bydate.tar.gz`` with that layout
(read in place, not extracted), directly or in a ``20newsgroups/`` subfolder. Texts are decoded as latin-1. Features: scikit-learn's
``TfidfVectorizer`` fitted on the training posts (ℓ2-normalised rows), kept as scipy CSR
float32 matrices so that the caller decides when (if ever) to densify.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._paths import expect_folder, locate

ARCHIVE = "20news-bydate.tar.gz"
SPLITS = {"train": "20news-bydate-train", "test": "20news-bydate-test"}


def _from_folders(data_dir: Path) -> dict:
    docs = {}
    for split, name in SPLITS.items():
        root = data_dir / name
        if not root.is_dir():
            raise FileNotFoundError(f"20 Newsgroups folder {root} not found")
        docs[split] = [(g.name, f.read_bytes().decode("latin-1"))
                       for g in sorted(p for p in root.iterdir() if p.is_dir())
                       for f in sorted(p for p in g.iterdir() if p.is_file())]
    return docs


def _from_archive(path: Path) -> dict:
    docs = {split: [] for split in SPLITS}
    by_name = {v: k for k, v in SPLITS.items()}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                parts = Path(m.name).parts
                if not m.isfile() or len(parts) < 3 or parts[-3] not in by_name:
                    continue
                text = tar.extractfile(m).read().decode("latin-1")
                docs[by_name[parts[-3]]].append((parts[-2], parts[-1], text))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e})") from None
    for split, name in SPLITS.items():
        if not docs[split]:
            raise DataError(f"{path}: no files under {name}/<group>/ in the archive")
        docs[split] = [(g, t) for g, _, t in sorted(docs[split])]  # the folders' order: group, file name
    return docs


def _locate(data_dir) -> Path:
    """``data_dir`` (or the archive itself), or its ``20newsgroups/`` or ``20news-bydate/`` subfolder."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return data_dir
    return locate(expect_folder(data_dir, f"the folder of {SPLITS['train']}/ or {ARCHIVE}"),
                  ("20newsgroups", "20news-bydate"),
                  lambda d: (d / SPLITS["train"]).is_dir() or (d / ARCHIVE).is_file())


def load_newsgroups(data_dir, max_features: int | None = None, min_df: int = 1) -> dict:
    """{"train": (X, y), "test": (X, y), "groups": [names], "vocabulary_size": n}: X scipy CSR
    float32 (posts, features) TF-IDF, y int32 group index (groups sorted by name)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    data_dir = _locate(data_dir)
    if (data_dir / SPLITS["train"]).is_dir():
        docs = _from_folders(data_dir)
    elif (data_dir / ARCHIVE).is_file():
        docs = _from_archive(data_dir / ARCHIVE)
    elif data_dir.is_file() and data_dir.name.endswith((".tar.gz", ".tgz")):
        docs = _from_archive(data_dir)
    elif data_dir.is_file():
        raise DataError(f"data_dir {data_dir} is a file but not the {ARCHIVE} archive: give the folder of "
                        f"{SPLITS['train']}/ or the archive")
    else:
        raise FileNotFoundError(f"20 Newsgroups not found: neither {data_dir / SPLITS['train']}/ "
                                f"nor {data_dir / ARCHIVE} exists (`ablo data fetch 20newsgroups` downloads it)")
    groups = sorted({g for g, _ in docs["train"]})
    index = {g: i for i, g in enumerate(groups)}
    unknown = sorted({g for g, _ in docs["test"]} - set(groups))
    if unknown:
        raise DataError(f"test groups {unknown} do not occur in the training split")
    vec = TfidfVectorizer(max_features=max_features, min_df=min_df, dtype=np.float32)
    out = {"groups": groups}
    for split in SPLITS:
        texts = [t for _, t in docs[split]]
        X = vec.fit_transform(texts) if split == "train" else vec.transform(texts)
        out[split] = (X.tocsr(), np.array([index[g] for g, _ in docs[split]], np.int32))
    out["vocabulary_size"] = len(vec.vocabulary_)
    return out
