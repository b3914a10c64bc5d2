"""MNIST in the IDX format (LeCun et al.): ``train-images-idx3-ubyte[.gz]`` and friends.

An IDX file is a big-endian header — two zero bytes, a type code (0x08 = uint8), the number
of dimensions n — then n uint32 sizes and the data. Gzip is recognised by its magic bytes, so
files named either way are read.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._checks import check_labels, check_pixels
from ._paths import expect_file, expect_folder, locate
from .content import identify_idx

N_CLASSES = 10

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_bytes(path) -> tuple:
    """(IDX data, the file's bytes as stored): the data is the file gunzipped when it starts with
    gzip's magic bytes, else the file itself."""
    path = expect_file(path)
    stored = path.read_bytes()
    if stored[:2] != b"\x1f\x8b":
        return stored, stored
    try:
        return gzip.decompress(stored), stored
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None


def _parse_idx(raw: bytes, path) -> np.ndarray:
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_TYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(f"{path}: truncated or padded IDX data: header says shape {shape} "
                        f"({need} bytes), file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(f"{dtype.kind}{dtype.itemsize}")


def read_idx(path) -> np.ndarray:
    """The array stored in one IDX file (gzipped or not)."""
    return _parse_idx(_idx_bytes(path)[0], path)


def _read_identified(path) -> tuple:
    """(array, digests): the IDX file's array and {SHA-256 of its IDX data, MD5 of its bytes as
    stored}, the digests :func:`ablo.data.content.identify_idx` knows datasets by."""
    raw, stored = _idx_bytes(path)
    return _parse_idx(raw, path), {hashlib.sha256(raw).hexdigest(), hashlib.md5(stored).hexdigest()}


def _find(data_dir: Path, stem: str) -> Path:
    variants = [stem, stem.replace("-idx", ".idx")]
    for name in variants:
        for suffix in (".gz", ""):
            p = data_dir / (name + suffix)
            if p.exists():
                return expect_file(p)
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {data_dir} (`ablo data fetch mnist` downloads it)")


def _role(stem: str) -> str:
    """"train-images" of "train-images-idx3-ubyte": the key of :data:`ablo.data.content.KNOWN_IDX`."""
    return stem.rsplit("-", 2)[0]


def _locate(data_dir) -> Path:
    """The folder of the IDX files: ``data_dir`` or its ``mnist/`` (or ``MNIST/``) subfolder."""
    return locate(expect_folder(data_dir, "the folder of MNIST's IDX files"), ("mnist", "MNIST"),
                  lambda d: any(d.glob("train-images*")))


def load_mnist(data_dir) -> dict:
    """MNIST's training and test splits from the four IDX files in ``data_dir`` (or its ``mnist/``
    subfolder), as written by ``ablo data fetch mnist``.

    Returns:
        ``{"train": (x, y), "test": (x, y), "name": name}``: x float32 (n, 784), pixel / 255 in
        [0, 1]; y int32 labels 0-9; ``name`` the dataset the files' digests identify ("MNIST",
        "Fashion-MNIST", ...) or "unknown" (:func:`ablo.data.content.identify_idx`).

    Raises:
        FileNotFoundError: a file is missing.
        DataError (a ValueError): naming the file, for corrupt or truncated data, a folder where
            a file should be, no images, images not (n, 28, 28),
            NaN/inf or out-of-range pixels, labels outside 0-9, or image and label counts that
            differ.
    """
    data_dir = _locate(data_dir)
    out, digests = {}, {}
    for split, (img_name, lab_name) in _FILES.items():
        img_path, lab_path = _find(data_dir, img_name), _find(data_dir, lab_name)
        images, digests[_role(img_name)] = _read_identified(img_path)
        labels, digests[_role(lab_name)] = _read_identified(lab_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{img_path}: expected images of shape (n, 28, 28); got {images.shape}")
        if images.shape[0] == 0:
            raise DataError(f"{img_path}: the IDX file holds 0 images; the file is empty or cut short: "
                            f"download it again")
        if labels.ndim != 1:
            raise DataError(f"{lab_path}: expected labels of shape (n,); got {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{img_path} holds {images.shape[0]} images but {lab_path} {labels.shape[0]} labels")
        check_pixels(images, img_path, 255.0)
        check_labels(labels, N_CLASSES, lab_path)
        x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
        out[split] = (x, labels.astype(np.int32))
    out["name"] = identify_idx(digests)
    return out
