"""A run folder is a record of one run: its results, its checkpoints and ``manifest.json``
(experiment, full config and its SHA-256, a fingerprint of the data files read, the versions
of ablo, jax, optax and Python). A :class:`RunFolder` claims a folder for one process and
refuses anything that would mix, lose or silently replace results:

* ``--out`` empty, or a path that is a file: refused;
* a second process writing the same folder: refused (an exclusive ``flock`` on ``.lock``);
* a fresh run into a folder that holds anything (another run's results or checkpoints, other
  files): refused unless ``overwrite``, which replaces a previous ablo run's files (never a
  folder without an ablo manifest). They are moved aside into ``.replaced`` and deleted when
  the new run ends; a new run that fails before writing any file of its own (a config its data
  refuses, say) puts them back, so a refused command loses nothing;
* ``resume`` into a folder whose manifest has another experiment, config or data: refused,
  naming the keys that differ.

Every refusal is a :class:`RunFolderError` (a ValueError) raised before anything in the folder
is touched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import shutil
from pathlib import Path
from typing import Optional

from .atomic import atomic_write

MANIFEST = "manifest.json"
LOCK = ".lock"
REPLACED = ".replaced"


class RunFolderError(ValueError):
    """A folder that this run may not write to, and why."""


def data_fingerprint(path) -> Optional[dict]:
    """{"path", "files", "bytes", "sha256"} over every file below ``path`` (names, sizes and
    contents, in sorted order); None for no path (generated or bundled data)."""
    if path is None:
        return None
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h, total = hashlib.sha256(), 0
    for p in files:
        rel = p.name if p == root else str(p.relative_to(root))
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        total += size
    return {"path": str(root.resolve()), "files": len(files), "bytes": total, "sha256": h.hexdigest()}


def versions() -> dict:
    import jax
    import optax

    from . import __version__

    return {"ablo": __version__, "jax": jax.__version__, "optax": optax.__version__, "python": platform.python_version()}


def _differences(old: dict, new: dict) -> list:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class RunFolder:
    """Context manager that claims ``out`` for a run of ``experiment`` with ``config`` (an
    :class:`~ablo.experiments.config.ExperimentConfig`) reading ``data_dir`` (or None)."""

    def __init__(self, out, experiment: str, config, data_dir=None, *, resume: bool = False,
                 overwrite: bool = False):
        if out is None or not str(out).strip() or str(out).strip() in (".", "./"):
            raise RunFolderError("--out is empty: name a folder for the results, e.g. --out runs/NAME")
        self.path = Path(out)
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--out {self.path} is a file, not a folder: name a folder for the results")
        if resume and overwrite:
            raise RunFolderError("give --resume or --overwrite, not both")
        self.experiment, self.config, self.resume, self.overwrite = experiment, config, resume, overwrite
        self.data_dir = data_dir
        self._lock = None

    # -- the manifest ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"experiment": self.experiment, "config": self.config.hashed_dict(),
                "config_sha256": self.config.digest(), "unhashed": {
                    k: v for k, v in self.config.as_dict().items() if k not in self.config.hashed_dict()},
                "data": data_fingerprint(self.data_dir), "versions": versions()}

    def _read_manifest(self) -> Optional[dict]:
        p = self.path / MANIFEST
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunFolderError(f"{p} is unreadable ({e}); use another --out or --overwrite") from None

    def holds_results(self) -> bool:
        """True when the folder holds anything besides a manifest and the lock (results,
        checkpoints, or files of some other program)."""
        return any(p.name not in (MANIFEST, LOCK) for p in self.path.iterdir())

    def _check(self, new: dict) -> None:
        old = self._read_manifest()
        if self.overwrite or not self.holds_results():
            return
        if not self.resume:
            what = f"a run of {old['experiment']}" if old else "results"
            raise RunFolderError(f"{self.path} already holds {what}; pass --resume to continue it, --overwrite to "
                                 "replace it, or choose another --out")
        if old is None:
            raise RunFolderError(f"{self.path} holds results without a {MANIFEST}: cannot tell which run made them; "
                                 "use another --out or --overwrite")
        if old.get("experiment") != new["experiment"]:
            raise RunFolderError(f"--resume: {self.path} holds a run of {old.get('experiment')}, not {new['experiment']}")
        diff = _differences(old.get("config", {}), new["config"])
        if diff:
            raise RunFolderError(f"--resume: the config differs from the run in {self.path} ({'; '.join(diff)}); "
                                 "resume with the same settings, or use another --out")
        if old.get("data") != new["data"]:
            o, n = old.get("data") or {}, new["data"] or {}
            raise RunFolderError(f"--resume: the data differ from the run in {self.path} (data_dir {o.get('path')} "
                                 f"sha256 {str(o.get('sha256'))[:12]} -> {n.get('path')} sha256 "
                                 f"{str(n.get('sha256'))[:12]}); resume with the same data, or use another --out")

    # -- claiming -------------------------------------------------------------------------------
    def __enter__(self) -> "RunFolder":
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / LOCK, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise RunFolderError(f"another ablo process is writing to {self.path}; wait for it or use another --out") \
                from None
        try:
            new = self.manifest()
            self._check(new)
            if self.overwrite:
                old = self._read_manifest()
                if old is None and self.holds_results():
                    raise RunFolderError(f"--overwrite: {self.path} holds files that no ablo run wrote (no {MANIFEST}); "
                                         "refusing to delete them, choose another --out")
                aside = self.path / REPLACED
                if aside.exists():  # left by a run killed before it could clear it
                    shutil.rmtree(aside)
                old_files = [p for p in self.path.iterdir() if p.name not in (LOCK, REPLACED)]
                if old_files:
                    aside.mkdir()
                    for p in old_files:
                        p.rename(aside / p.name)
            atomic_write(self.path / MANIFEST, json.dumps(new, indent=2) + "\n")
        except BaseException as e:
            self.__exit__(type(e), e, None)
            raise
        return self

    def __exit__(self, exc_type, *exc) -> None:
        aside = self.path / REPLACED
        if aside.exists():
            own = [p for p in self.path.iterdir() if p.name not in (LOCK, REPLACED, MANIFEST)]
            if exc_type is not None and not own:  # the new run failed before writing anything: undo
                (self.path / MANIFEST).unlink(missing_ok=True)
                for p in aside.iterdir():
                    p.rename(self.path / p.name)
                aside.rmdir()
            else:
                shutil.rmtree(aside)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None



def checkpoint_dir(root, label: str) -> Path:
    """``root/checkpoints/<label>`` with the characters of a spec that paths dislike replaced."""
    return Path(root) / "checkpoints" / label.replace("/", "_").replace(":", "_").replace(",", "_")


