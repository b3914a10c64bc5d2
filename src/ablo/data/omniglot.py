"""Omniglot (Lake et al.): 1,623 handwritten characters from 50 alphabets, 20 drawers each.

Two layouts are read from ``data_dir``:

* ``images_<split>.npz`` with key ``images``, a bool array (characters, 20, 105, 105), True =
  white background, optionally ``labels`` (characters, 20) and ``alphabets`` (one name per
  character), else ``char_id_to_alphabet.json`` (1-based character ids, background first, then
  evaluation) for alphabet names; ``ablo data fetch omniglot`` writes these from the zips;
* the official archives ``images_<split>.zip`` (what ``ablo data fetch omniglot`` downloads),
  read in place, or the folders ``images_<split>/<alphabet>/<character>/<drawing>.png`` they
  unpack to.

``data_dir`` may also be a folder holding an ``omniglot/`` subfolder. ``split`` is "background" (964 characters, for meta-training) or "evaluation" (659, held out).
Images come back as float32 ink intensity (1 = stroke, 0 = paper), area-resampled to
``size`` x ``size``.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..errors import DataError
from ._checks import check_labels, check_pixels
from ._paths import expect_file, expect_folder, locate
from ..checks import is_int

SPLITS = ("background", "evaluation")


class Omniglot(NamedTuple):
    """One Omniglot split, as :func:`load_omniglot` returns it.

    Attributes:
        images: float32 (characters, drawers, size, size), ink intensity in [0, 1] (1 = stroke).
        alphabets: the alphabet name of each character, or None when the files do not say.
    """

    images: np.ndarray
    alphabets: Optional[list]


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """R (n_out, n_in) with R[i, j] = |[j, j+1) ∩ bin i| / bin width, bins of width n_in/n_out:
    R X Rᵀ is area (box) resampling of an image X."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
    return np.clip(hi - lo, 0, None) / (n_in / n_out)


def resize(images: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Area-resample the last two (square) axes of ``images`` to ``size`` x ``size``, ``chunk``
    images at a time (the full Omniglot split in float32 would take 0.6 GB)."""
    n = images.shape[-1]
    flat = images.reshape(-1, n, n)
    if size == n:
        return flat.astype(np.float32).reshape(images.shape)
    rt = _area_matrix(n, size).T.astype(np.float32)
    out = np.empty((flat.shape[0], size, size), np.float32)
    for i in range(0, flat.shape[0], chunk):
        x = flat[i:i + chunk].astype(np.float32) @ rt  # (b, n, size): columns resampled
        out[i:i + chunk] = np.swapaxes(np.swapaxes(x, 1, 2) @ rt, 1, 2)  # rows resampled
    return np.clip(out, 0.0, 1.0).reshape(*images.shape[:-2], size, size)


def _alphabets_from_json(data_dir: Path, split: str, n: int) -> Optional[list]:
    path = data_dir / "char_id_to_alphabet.json"
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text())
        ids = sorted(int(k) for k in names)
    except (json.JSONDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a JSON map from character id to alphabet ({e})") from None
    chosen = ids[:n] if split == "background" else ids[len(ids) - n:]
    return [names[str(i)] for i in chosen]


def _from_npz(path: Path, data_dir: Path, split: str):
    try:
        with np.load(path) as d:
            images = d["images"]
            labels = d["labels"] if "labels" in d.files else None
            alphabets = [str(a) for a in d["alphabets"]] if "alphabets" in d.files else None
    except KeyError:
        raise DataError(f"{path}: no 'images' array") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: corrupt or truncated npz ({e})") from None
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise DataError(f"{path}: expected images (characters, drawers, n, n); got shape {images.shape}")
    if images.dtype != bool:
        check_pixels(images, path, 1.0)
    if labels is not None:
        if labels.shape != images.shape[:2]:
            raise DataError(f"{path}: labels of shape {labels.shape}, expected {images.shape[:2]} (one per drawing)")
        check_labels(labels, images.shape[0], path)
    if alphabets is not None and len(alphabets) != images.shape[0]:
        raise DataError(f"{path}: {len(alphabets)} alphabet names for {images.shape[0]} characters")
    ink = np.logical_not(images) if images.dtype == bool else 1.0 - images.astype(np.float32)
    return ink, alphabets if alphabets is not None else _alphabets_from_json(data_dir, split, images.shape[0])


def _read_png(source, name) -> np.ndarray:
    """Ink intensity of one PNG; ``source`` is a path or a file object, ``name`` names it in errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            return 1.0 - np.asarray(im.convert("L"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{name}: corrupt or truncated PNG ({e})") from None


def _stack_characters(characters: dict, where) -> tuple:
    """(images, alphabets) from {(alphabet, character): [(drawing name, read())]}, in sorted order;
    ``where`` names the folder or archive in errors."""
    if not characters:
        raise FileNotFoundError(f"no <alphabet>/<character>/*.png drawings in {where}")
    chars, alphabets = [], []
    for (alphabet, character), drawings in sorted(characters.items()):
        chars.append((f"{where}/{alphabet}/{character}", np.stack([read() for _, read in sorted(drawings)])))
        alphabets.append(alphabet)
    shape = chars[0][1].shape
    for name, arr in chars:
        if arr.shape != shape:
            raise DataError(f"{name}: drawings of shape {arr.shape}, expected {shape} like the others")
    return np.stack([a for _, a in chars]), alphabets


def _from_folders(root: Path):
    characters = {}
    for alphabet in sorted(p for p in root.iterdir() if p.is_dir()):
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            pngs = sorted(character.glob("*.png"))
            if not pngs:
                raise DataError(f"{character}: no PNG drawings")
            characters[alphabet.name, character.name] = [(p.name, lambda p=p: _read_png(p, p)) for p in pngs]
    return _stack_characters(characters, root)


def _from_zip(path: Path):
    """The official archive ``images_<split>.zip`` (``images_<split>/<alphabet>/<character>/*.png``),
    read in place."""
    try:
        with zipfile.ZipFile(path) as archive:
            characters = {}
            for info in archive.infolist():
                parts = Path(info.filename).parts
                if info.is_dir() or not info.filename.endswith(".png") or len(parts) < 3 or parts[0] == "__MACOSX":
                    continue
                read = lambda info=info: _read_png(io.BytesIO(archive.read(info)), f"{path}:{info.filename}")
                characters.setdefault((parts[-3], parts[-2]), []).append((parts[-1], read))
            return _stack_characters(characters, path)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DataError(f"{path}: corrupt or truncated zip archive ({e})") from None


def zip_to_npz(archive, target) -> Path:
    """Decode an official ``images_<split>.zip`` once into the ``.npz`` layout this module reads
    fastest (seconds instead of a minute of PNG decoding): ``images`` bool (characters, drawers,
    n, n), True = paper; ``labels`` (characters, drawers) the character's index; ``alphabets`` the
    alphabet of each character. Omniglot's drawings are black and white, so nothing is lost.
    Written atomically to ``target``, which is returned."""
    from ..atomic import atomic_write

    ink, alphabets = _from_zip(Path(archive))
    labels = np.repeat(np.arange(ink.shape[0])[:, None], ink.shape[1], axis=1)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=ink < 0.5, labels=labels, alphabets=np.array(alphabets))
    return atomic_write(target, buf.getvalue())


def _sources(data_dir: Path, split: str) -> tuple:
    """(npz, folder of PNGs, zip) of ``split`` in ``data_dir``, in the loader's order of preference."""
    return tuple(data_dir / n for n in (f"images_{split}.npz", f"images_{split}", f"images_{split}.zip"))


def _locate(data_dir, split: str) -> Path:
    """The folder holding ``split``: ``data_dir`` or its ``omniglot/`` subfolder."""
    return locate(expect_folder(data_dir, "the folder of Omniglot's images_<split> files"), ("omniglot",),
                  lambda d: any(p.exists() for p in _sources(d, split)))


def load_omniglot(data_dir, split: str = "background", size: int = 28) -> Omniglot:
    """The characters of one split, resized to ``size`` (105 keeps the originals)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if not is_int(size) or size < 1:
        raise ValueError(f"size must be a positive integer; got {size!r}")
    data_dir = _locate(data_dir, split)
    npz, folder, archive = _sources(data_dir, split)
    for p in (npz, archive):
        if p.exists():
            expect_file(p)
    if npz.is_file():
        images, alphabets = _from_npz(npz, data_dir, split)
    elif folder.is_dir():
        images, alphabets = _from_folders(folder)
    elif archive.is_file():
        images, alphabets = _from_zip(archive)
    else:
        raise FileNotFoundError(f"Omniglot {split} split not found: none of {npz}, {folder}/, {archive} exists "
                                f"(`ablo data fetch omniglot` downloads the archives)")
    if size > images.shape[-1]:
        raise DataError(f"size must be at most the stored image size {images.shape[-1]}; got {size}")
    return Omniglot(resize(images, size), alphabets)
