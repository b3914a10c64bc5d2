"""MNIST in the IDX format (LeCun et al.): ``train-images-idx3-ubyte[.gz]`` and friends.

An IDX file is a big-endian header — two zero bytes, a type code (0x08 = uint8), the number
of dimensions n — then n uint32 sizes and the data. Gzip is recognised by its magic bytes, so
files named either way are read.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ._checks import check_labels, check_pixels
from ._paths import locate

N_CLASSES = 10

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path) -> np.ndarray:
    """The array stored in one IDX file (gzipped or not)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_TYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise ValueError(f"{path}: truncated or padded IDX data: header says shape {shape} "
                         f"({need} bytes), file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(f"{dtype.kind}{dtype.itemsize}")


def _find(data_dir: Path, stem: str) -> Path:
    variants = [stem, stem.replace("-idx", ".idx")]
    for name in variants:
        for suffix in (".gz", ""):
            p = data_dir / (name + suffix)
            if p.is_file():
                return p
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {data_dir} (`ablo data fetch mnist` downloads it)")


def load_mnist(data_dir) -> dict:
    """MNIST's training and test splits from the four IDX files in ``data_dir`` (or its ``mnist/``
    subfolder), as written by ``ablo data fetch mnist``.

    Returns:
        ``{"train": (x, y), "test": (x, y)}``: x float32 (n, 784), pixel / 255 in [0, 1]; y int32
        labels 0-9.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: naming the file, for corrupt or truncated data, images not (n, 28, 28),
            NaN/inf or out-of-range pixels, labels outside 0-9, or image and label counts that
            differ.
    """
    data_dir = locate(data_dir, ("mnist", "MNIST"), lambda d: any(d.glob("train-images*")))
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MNIST directory {data_dir} does not exist")
    out = {}
    for split, (img_name, lab_name) in _FILES.items():
        img_path, lab_path = _find(data_dir, img_name), _find(data_dir, lab_name)
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{img_path}: expected images of shape (n, 28, 28); got {images.shape}")
        if labels.ndim != 1:
            raise ValueError(f"{lab_path}: expected labels of shape (n,); got {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{img_path} holds {images.shape[0]} images but {lab_path} {labels.shape[0]} labels")
        check_pixels(images, img_path, 255.0)
        check_labels(labels, N_CLASSES, lab_path)
        x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
        out[split] = (x, labels.astype(np.int32))
    return out
