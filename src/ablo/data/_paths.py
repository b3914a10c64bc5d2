"""Where a dataset lives under a data directory."""

from __future__ import annotations

from pathlib import Path


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
