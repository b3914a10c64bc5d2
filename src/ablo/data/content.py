"""What a dataset is, by content: the files each loader reads and the names of known digests.

A run's manifest fingerprints exactly the files its loader reads (:func:`dataset_files`), never
the rest of the data directory: unrelated files beside the dataset (another dataset, a 30 GB
archive) cost nothing at start-up and do not block ``--resume``. A dataset's name comes from
the digests of its files (:func:`identify_idx`), never from file names or shapes: Fashion-MNIST
saved under MNIST's file names is Fashion-MNIST, an unknown set of IDX files is "unknown".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Mapping, Optional

#: Name given to data whose digests match no known dataset.
UNKNOWN = "unknown"

#: dataset -> {file role: digests identifying that file}. MNIST (LeCun, Cortes, Burges): SHA-256 of
#: the IDX data (as decompressed, so any gzip framing matches), computed from files whose MD5 sums
#: match the canonical ones. Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): the MD5 sums of the
#: gzipped files that Zalando Research publishes (torchvision checks the same).
KNOWN_IDX: Mapping[str, Mapping[str, frozenset]] = {
    "MNIST": {
        "train-images": frozenset({"ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"}),
        "train-labels": frozenset({"65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"}),
        "t10k-images": frozenset({"0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"}),
        "t10k-labels": frozenset({"ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}),
    },
    "Fashion-MNIST": {
        "train-images": frozenset({"8d4fb7e6c68d591d4c3dfef9ec88bf0d"}),
        "train-labels": frozenset({"25c81989df183df01b3e8a0aad5dffbe"}),
        "t10k-images": frozenset({"bef4ecab320f06d8554ea6380940ec79"}),
        "t10k-labels": frozenset({"bb300cfdad3c16e7a12a480ee83cd310"}),
    },
}


def identify_idx(digests: Mapping[str, set]) -> str:
    """The name of the dataset whose every file matches: ``digests`` maps each file role
    ("train-images", ...) to the digests computed from the file read (e.g. MD5 of the bytes as
    stored and SHA-256 of the IDX data); :data:`UNKNOWN` when no known dataset matches all four."""
    for name, known in KNOWN_IDX.items():
        if set(known) == set(digests) and all(known[role] & set(digests[role]) for role in known):
            return name
    return UNKNOWN


def dataset_files(dataset: Optional[str], data_dir) -> List[Path]:
    """The files the loader of ``dataset`` ("mnist", "omniglot", "20newsgroups") reads from
    ``data_dir``, in the loader's precedence, without reading any of them; files that are
    missing are left out (the loader names them). For no ``dataset`` (a config that does not say
    which loader reads it): ``data_dir`` itself when it is a file, else every file below it."""
    root = Path(data_dir)
    if root.is_file():
        return [root]
    if dataset == "mnist":
        from .mnist import _FILES, _find, _locate

        folder, found = _locate(root), []
        for stem in (s for pair in _FILES.values() for s in pair):
            try:
                found.append(_find(folder, stem))
            except (FileNotFoundError, ValueError):
                pass
        return found
    if dataset == "omniglot":
        from .omniglot import SPLITS, _locate, _sources

        found = []
        for split in SPLITS:
            folder = _locate(root, split)
            npz, pngs, archive = _sources(folder, split)
            if npz.is_file():
                found.append(npz)
                found += [p for p in (folder / "char_id_to_alphabet.json",) if p.is_file()]
            elif pngs.is_dir():
                found += sorted(pngs.rglob("*.png"))
            elif archive.is_file():
                found.append(archive)
        return list(dict.fromkeys(found))
    if dataset == "20newsgroups":
        from .newsgroups import ARCHIVE, SPLITS, _locate

        folder = _locate(root)
        if (folder / SPLITS["train"]).is_dir():
            return sorted(f for name in SPLITS.values() if (folder / name).is_dir()
                          for f in (folder / name).rglob("*") if f.is_file())
        return [folder / ARCHIVE] if (folder / ARCHIVE).is_file() else []
    return sorted(p for p in root.rglob("*") if p.is_file())


def fingerprint(files: List[Path], root) -> dict:
    """{"path", "files", "bytes", "sha256"}: SHA-256 over each file's name (relative to the
    folder that holds them all), size and contents, in order. Only names and contents decide it
    (the same files in another folder give the same sha256); "path", ``root`` resolved, is for
    people."""
    base = Path(os.path.commonpath([p.parent for p in files])) if files else Path(root)
    h, total = hashlib.sha256(), 0
    for p in files:
        rel = str(p.relative_to(base))
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        total += size
    return {"path": str(Path(root).resolve()), "files": len(files), "bytes": total, "sha256": h.hexdigest()}
