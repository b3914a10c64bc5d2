"""Where a dataset lives under a data directory, and the checks that a path is what it should be."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def locate(data_dir, subfolders: tuple, found) -> Path:
    """``data_dir`` itself when ``found(data_dir)``, else its first subfolder (e.g. ``mnist/`` of a
    data root that holds every dataset) for which ``found`` holds, else ``data_dir`` (the loader then names
    what is missing)."""
    data_dir = Path(data_dir)
    if found(data_dir):
        return data_dir
    for name in subfolders:
        if found(data_dir / name):
            return data_dir / name
    return data_dir


def expect_folder(path, what: str) -> Path:
    """``path`` as a Path; DataError when it is a file, FileNotFoundError when it does not exist."""
    path = Path(path)
    if path.is_file():
        raise DataError(f"data_dir {path} is a file, not a folder: give {what}")
    if not path.is_dir():
        raise FileNotFoundError(f"data_dir {path} does not exist: give {what}")
    return path


def expect_file(path) -> Path:
    """``path`` as a Path; DataError when it is a folder (or anything but a regular file)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder where the dataset's file should be: move it away and put the file "
                        f"there (`ablo data fetch` downloads it)")
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a regular file (a device or a pipe?): put the dataset's file there")
    return path
