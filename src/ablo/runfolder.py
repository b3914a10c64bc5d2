"""A run folder is a record of one run: its results, its checkpoints and ``manifest.json``.

The manifest says what ran (experiment, full config and its SHA-256), on what data (a
fingerprint of exactly the files the experiment's loader reads, :mod:`ablo.data.content`), with
which versions (ablo, jax, optax, Python; a resume under other versions is recorded in
``resumes``), which files were already in the folder (``kept``) and which files the run wrote
(``files``, recorded when the run ends, also when it is interrupted). The marker field
``ablo_run_folder`` and a schema check tell an ablo manifest from any other ``manifest.json``.

A :class:`RunFolder` claims a folder for one process and refuses anything that would mix, lose
or silently replace results:

* ``--out`` empty, a file, or a dangling symbolic link: refused;
* a second process writing the same folder: refused (an exclusive ``flock`` on ``.lock``, which
  is removed when the run ends);
* a fresh run into a folder that holds anything (a run's results or checkpoints, other files):
  refused unless ``overwrite``, which removes only the files that the previous ablo run lists
  in its manifest (for a run killed before it could list them: its ``checkpoints/``); every
  other file stays byte-identical, and a folder whose manifest is not an ablo manifest is never
  touched. The listed files are moved aside into ``.replaced`` and deleted when the new run
  ends; a new run that fails before writing any file of its own puts them back;
* ``resume`` into a folder whose manifest has another experiment, config or data: refused,
  naming the keys that differ.

A run that fails before writing a file of its own (a config its data refuses, say) leaves the
folder as it found it: a folder it created is removed again. A folder holding only the lock and
the temporary file of a first manifest write that was killed counts as empty. Every refusal is
a :class:`RunFolderError` raised before anything in the folder is touched.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shutil
from pathlib import Path
from typing import List, Optional

from .atomic import atomic_write
from .errors import UserError

MANIFEST = "manifest.json"
LOCK = ".lock"
REPLACED = ".replaced"
CHECKPOINTS = "checkpoints"
#: The marker field of an ablo manifest, and the schema version it holds.
MARKER, SCHEMA = "ablo_run_folder", 1
#: The temporary files of :func:`ablo.atomic.atomic_write` (a write killed before its rename).
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


class RunFolderError(UserError, ValueError):
    """A folder that this run may not write to, and why."""


def data_fingerprint(path, dataset: Optional[str] = None) -> Optional[dict]:
    """{"path", "files", "bytes", "sha256"} of the files the loader of ``dataset`` reads from
    ``path`` (:func:`ablo.data.content.dataset_files`); None for no path (generated or bundled
    data)."""
    if path is None:
        return None
    from .data.content import dataset_files, fingerprint

    return fingerprint(dataset_files(dataset, path), path)


def _every_file_fingerprint(path) -> dict:
    """{"path", "sha256"} as an ablo without the marker field recorded them: over every file below
    ``path`` (names relative to it, sizes, contents)."""
    import hashlib

    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name if p == root else p.relative_to(root)}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return {"path": str(root.resolve()), "sha256": h.hexdigest()}


def versions() -> dict:
    import jax
    import optax

    from . import __version__

    return {"ablo": __version__, "jax": jax.__version__, "optax": optax.__version__, "python": platform.python_version()}


def _differences(old: dict, new: dict) -> list:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _schema_error(m) -> str:
    """What makes ``m`` not an ablo manifest ("" when it is one)."""
    if not isinstance(m, dict):
        return f"a JSON {type(m).__name__}, not an object"
    types = {"experiment": str, "config": dict, "config_sha256": str, "versions": dict, "kept": list}
    if MARKER not in m:  # written before the marker existed: the same fields, nothing listed
        legacy = {k: t for k, t in types.items() if k != "kept"}
        if all(isinstance(m.get(k), t) for k, t in legacy.items()) and set(m) <= {*legacy, "unhashed", "data"}:
            return ""
        return f"no {MARKER}: {SCHEMA} field"
    if m[MARKER] != SCHEMA:
        return f"{MARKER} is {m[MARKER]!r}, not {SCHEMA}"
    for key, typ in types.items():
        if not isinstance(m.get(key), typ):
            return f"{key} is missing or not a {typ.__name__}"
    for key in ("kept", "files"):
        if key in m and not (isinstance(m[key], list) and all(isinstance(p, str) and _inside(p) for p in m[key])):
            return f"{key} is not a list of relative paths inside the folder"
    if m.get("data") is not None and not isinstance(m["data"], dict):
        return "data is not an object"
    return ""


def _inside(rel: str) -> bool:
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts


def read_manifest(folder) -> Optional[dict]:
    """The ablo manifest of ``folder``, None when it has none; :class:`RunFolderError` naming
    the file when it is unreadable, not JSON or not an ablo manifest."""
    p = Path(folder) / MANIFEST
    if not p.exists() and not p.is_symlink():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{p} is not an ablo manifest (unreadable: {e}); ablo leaves this folder alone: "
                             f"choose another --out") from None
    why = _schema_error(m)
    if why:
        raise RunFolderError(f"{p} is not an ablo manifest ({why}); ablo leaves this folder alone: choose another "
                             f"--out")
    return m


def version_change(folder) -> str:
    """One line naming the versions that differ between the run in ``folder`` and this process
    ("" when none differ or there is no run)."""
    m = read_manifest(folder)
    if m is None:
        return ""
    now = versions()
    diff = [f"{k} {m['versions'].get(k)} -> {now[k]}" for k in ("ablo", "jax", "optax", "python")
            if m["versions"].get(k) != now[k]]
    return f"the run in {folder} was made with other versions ({', '.join(diff)}); the manifest records both" \
        if diff else ""


class RunFolder:
    """Context manager that claims ``out`` for a run of ``experiment`` with ``config`` (an
    :class:`~ablo.config.ExperimentConfig`) reading ``data_dir`` (or None) through the
    loader of ``config.DATASET``."""

    def __init__(self, out, experiment: str, config, data_dir=None, *, resume: bool = False,
                 overwrite: bool = False):
        if out is None or not str(out).strip() or str(out).strip() in (".", "./"):
            raise RunFolderError("--out is empty: name a folder for the results, e.g. --out runs/NAME")
        self.path = Path(out)
        if self.path.is_symlink() and not self.path.exists():
            raise RunFolderError(f"--out {self.path} is a symbolic link to {os.readlink(self.path)}, which does not "
                                 f"exist: create that folder or name another --out")
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--out {self.path} is a file, not a folder: name a folder for the results")
        for parent in self.path.parents:
            if parent.exists() and not parent.is_dir():
                raise RunFolderError(f"--out {self.path}: {parent} is a file, not a folder")
        if resume and overwrite:
            raise RunFolderError("give --resume or --overwrite, not both")
        self.experiment, self.config, self.resume, self.overwrite = experiment, config, resume, overwrite
        self.data_dir = data_dir
        self._lock = None
        self._created: List[Path] = []  # folders this run made, deepest first
        self._kept: List[str] = []  # files that were here and are not this run's
        self._old_text: Optional[str] = None  # the manifest as found (put back by a run that fails early)
        self._moved: List[str] = []  # a replaced run's files, moved into .replaced
        self._new: Optional[dict] = None  # the manifest this run wrote

    # -- the manifest ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {MARKER: SCHEMA, "experiment": self.experiment, "config": self.config.hashed_dict(),
                "config_sha256": self.config.digest(), "unhashed": {
                    k: v for k, v in self.config.as_dict().items() if k not in self.config.hashed_dict()},
                "data": data_fingerprint(self.data_dir, getattr(self.config, "DATASET", None)),
                "versions": versions(), "kept": []}

    def _files(self) -> List[str]:
        """Every file below the folder (relative paths), except the lock, .replaced and the
        temporary files of killed atomic writes."""
        out = []
        for top, dirs, names in os.walk(self.path):  # symbolic links are listed, not followed
            rel = Path(top).relative_to(self.path)
            dirs[:] = sorted(d for d in dirs if not (rel == Path(".") and d == REPLACED)
                             and not os.path.islink(os.path.join(top, d)))
            links = [d for d in os.listdir(top) if os.path.islink(os.path.join(top, d)) and d not in names]
            out += [str(rel / n) for n in sorted(names + links)
                    if not (rel == Path(".") and n == LOCK) and not _TEMPORARY.match(n)]
        return sorted(out)

    def _written_by(self, old: dict) -> List[str]:
        """The files of the folder that the run of manifest ``old`` wrote: those it lists, or, for a
        run killed before it could list them (or made by an older ablo), its checkpoints; always its
        manifest."""
        if "files" in old:
            listed = set(old["files"])
        else:
            listed = {f for f in self._files() if Path(f).parts[0] == CHECKPOINTS and f not in old.get("kept", [])}
        return [f for f in self._files() if f in listed or f == MANIFEST]

    def _check(self, old: Optional[dict], new: dict) -> None:
        present = [f for f in self._files() if f != MANIFEST]
        if not present:
            return
        if self.overwrite:
            if old is None:
                raise RunFolderError(f"--overwrite: {self.path} holds files that no ablo run wrote (no {MANIFEST}); "
                                     "refusing to delete them, choose another --out")
            if MARKER not in old:
                raise RunFolderError(f"--overwrite: the run in {self.path} was made by an older ablo that did not list "
                                     f"its files, so they cannot be told from yours; --resume it, remove them "
                                     f"yourself, or choose another --out")
            return
        if not self.resume:
            what = f"a run of {old['experiment']}" if old else "files"
            raise RunFolderError(f"{self.path} already holds {what}; pass --resume to continue it, --overwrite to "
                                 "replace it (files ablo did not write stay), or choose another --out")
        if old is None:
            raise RunFolderError(f"{self.path} holds files without a {MANIFEST}: cannot tell which run made them; "
                                 "use another --out")
        if old["experiment"] != new["experiment"]:
            raise RunFolderError(f"--resume: {self.path} holds a run of {old['experiment']}, not {new['experiment']}")
        diff = _differences(old["config"], new["config"])
        if diff:
            raise RunFolderError(f"--resume: the config differs from the run in {self.path} ({'; '.join(diff)}); "
                                 "resume with the same settings, or use another --out")
        o, n = old.get("data") or {}, new["data"] or {}
        if MARKER not in old and o.get("path"):  # an older ablo fingerprinted every file below the data folder
            n = _every_file_fingerprint(o["path"]) if Path(o["path"]).exists() else n
        if o.get("sha256") != n.get("sha256"):
            raise RunFolderError(f"--resume: the data differ from the run in {self.path} (data_dir {o.get('path')} "
                                 f"sha256 {str(o.get('sha256'))[:12]} -> {n.get('path')} sha256 "
                                 f"{str(n.get('sha256'))[:12]}); resume with the same data, or use another --out")
        ckpts = self.path / CHECKPOINTS
        bad = [ckpts] if ckpts.exists() and not ckpts.is_dir() else [
            p for p in ckpts.iterdir() if not p.is_dir()] if ckpts.is_dir() else []
        if bad:
            raise RunFolderError(f"--resume: {bad[0]} is a file where the run keeps a folder of checkpoints; move it "
                                 f"away, or use another --out")

    # -- claiming -------------------------------------------------------------------------------
    def _make_folder(self) -> None:
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        self._created = missing  # deepest first

    def _acquire(self) -> None:
        lock = self.path / LOCK
        self._lock = open(lock, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.path.exists(lock) and os.stat(lock).st_ino == os.fstat(self._lock.fileno()).st_ino
        except OSError:
            same = False
        if not same:  # held by another process, or removed by a run that just ended while we opened it
            self._lock.close()
            self._lock = None
            raise RunFolderError(f"another ablo process is writing to {self.path}; wait for it or use another --out")

    def __enter__(self) -> "RunFolder":
        self._make_folder()
        try:
            self._acquire()
            old = read_manifest(self.path)
            self._old_text = (self.path / MANIFEST).read_text() if old is not None else None
            new = self.manifest()
            self._check(old, new)
            for p in self.path.iterdir():  # temporary files of writes that a kill cut short
                if _TEMPORARY.match(p.name) and p.is_file():
                    p.unlink()
            if (self.path / REPLACED).exists():  # left by a run killed before it could clear it
                shutil.rmtree(self.path / REPLACED)
            if self.overwrite and old is not None:
                self._move_aside(self._written_by(old))
            elif self.resume and old is not None:
                ours = set(self._written_by(old))
                new["resumes"] = old.get("resumes", []) + (
                    [{"versions": new["versions"], "previous": old["versions"]}]
                    if old["versions"] != new["versions"] else [])
                self._kept = [f for f in self._files() if f not in ours and f != MANIFEST]
            if not self.resume or old is None:
                self._kept = [f for f in self._files() if f != MANIFEST]
            new["kept"] = self._kept
            self._new = new
            atomic_write(self.path / MANIFEST, json.dumps(new, indent=2) + "\n")
        except BaseException as e:
            self.__exit__(type(e), e, None)
            raise
        return self

    def _move_aside(self, files: List[str]) -> None:
        aside = self.path / REPLACED
        for rel in files:
            target = aside / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.path / rel).rename(target)
            self._moved.append(rel)
        for rel in files:  # folders the replaced run made that are empty now
            for parent in Path(rel).parents:
                d = self.path / parent
                if parent != Path(".") and d.is_dir() and not any(d.iterdir()):
                    d.rmdir()

    def __exit__(self, exc_type, *exc) -> None:
        if self._lock is not None:
            own = [f for f in self._files() if f not in self._kept and f != MANIFEST]
            if exc_type is not None and (not own or self._new is None):  # refused or failed early: undo
                aside = self.path / REPLACED
                for rel in self._moved:
                    (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
                    (aside / rel).rename(self.path / rel)
                if self._new is not None:
                    if self._old_text is not None:
                        atomic_write(self.path / MANIFEST, self._old_text)
                    else:
                        (self.path / MANIFEST).unlink(missing_ok=True)
            else:
                atomic_write(self.path / MANIFEST, json.dumps(dict(self._new, files=own), indent=2) + "\n")
            if (self.path / REPLACED).exists():
                shutil.rmtree(self.path / REPLACED)
            self._release()
        self._remove_created()

    def _release(self) -> None:
        (self.path / LOCK).unlink(missing_ok=True)  # while held: a waiting process then sees it gone
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        self._lock = None

    def _remove_created(self) -> None:
        for d in self._created:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
            else:
                break


def checkpoint_dir(root, label: str) -> Path:
    """``root/checkpoints/<label>`` with the characters of a spec that paths dislike replaced."""
    return Path(root) / CHECKPOINTS / label.replace("/", "_").replace(":", "_").replace(",", "_")
