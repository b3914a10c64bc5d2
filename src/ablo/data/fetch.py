"""``ablo data fetch``: download MNIST, Omniglot and 20 Newsgroups from their canonical sources.

Each dataset is written to its subfolder (``mnist/``, ``omniglot/``, ``20newsgroups/``) of a data
directory, in exactly the form the loaders of :mod:`ablo.data` read: MNIST's four gzipped IDX
files, Omniglot's two official zip archives, each also decoded once into ``images_<split>.npz``
(which the loader reads in seconds rather than decoding 32,460 PNGs every time), the 20
Newsgroups "bydate" tar.gz (read in place). The default data directory is
:func:`default_data_dir`.

Every file is checked against its published SHA-256 before it gets its name: it is downloaded to
a hidden temporary file in the same folder, its length checked against the server's
``Content-Length``, its digest (and for MNIST also the digest of the decompressed IDX data)
compared, and only then renamed into place (an atomic rename on one file system). A failed or
interrupted download leaves nothing behind, not even the folder it made; a file already present
with the right digest (or, gzipped, the right decompressed data) is not downloaded again.

Sources (digests as published by the projects that distribute these files):

* MNIST (LeCun, Cortes, Burges): the copy of yann.lecun.com's files that torchvision uses,
  ``https://ossci-datasets.s3.amazonaws.com/mnist/``. The IDX digests were computed here from
  files whose MD5 sums match the canonical ones.
* Omniglot (Lake, Salakhutdinov, Tenenbaum, Science 2015): ``images_background.zip`` and
  ``images_evaluation.zip`` of https://github.com/brendenlake/omniglot (``python/``).
* 20 Newsgroups "bydate" (Lang 1995; Rennie): the archive scikit-learn downloads,
  ``https://ndownloader.figshare.com/files/5975967``, with scikit-learn's digest.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Optional

from ..errors import UserError


class Remote(NamedTuple):
    """One file to download: saved as ``name`` after its bytes hash to ``sha256``; when
    ``gunzip_sha256`` is given the gunzipped bytes must hash to it too."""

    name: str
    url: str
    sha256: str
    gunzip_sha256: Optional[str] = None


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_OMNIGLOT = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"

#: MNIST file -> (SHA-256 of the .gz as published, SHA-256 of the IDX data inside it).
_MNIST_DIGESTS = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                   "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                   "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                  "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                  "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}

#: dataset name -> the files ``ablo data fetch NAME`` writes into ``<data dir>/NAME/``.
SOURCES: Mapping[str, tuple] = {
    "mnist": tuple(Remote(name, _MNIST + name, gz, idx) for name, (gz, idx) in _MNIST_DIGESTS.items()),
    "omniglot": (
        Remote("images_background.zip", _OMNIGLOT + "images_background.zip",
               "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640"),
        Remote("images_evaluation.zip", _OMNIGLOT + "images_evaluation.zip",
               "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee"),
    ),
    "20newsgroups": (
        Remote("20news-bydate.tar.gz", "https://ndownloader.figshare.com/files/5975967",
               "8f1b2514ca22a5ade8fbb9cfa5727df95fa587f4c87b786e15c759fa66d95610"),
    ),
}


class FetchError(UserError, OSError):
    """A download that failed, was cut short or did not match its digest (nothing was kept)."""


def default_data_dir() -> Path:
    """The data directory: ``$ABLO_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/ablo``, else
    ``~/.cache/ablo``."""
    if os.environ.get("ABLO_DATA_DIR"):
        return Path(os.environ["ABLO_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "ablo"


def cached(dataset: str, data_dir=None) -> Optional[Path]:
    """``<data_dir>/<dataset>/`` when :func:`fetch` has put the whole dataset there (every file of
    ``SOURCES[dataset]`` present; an Omniglot zip may be replaced by the ``.npz`` decoded from it),
    else None. Only names are checked (the run's manifest fingerprints the contents).

    Args:
        dataset: a key of :data:`SOURCES`.
        data_dir: the data directory, default :func:`default_data_dir`.
    """
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(SOURCES)}")
    folder = Path(data_dir if data_dir is not None else default_data_dir()).expanduser() / dataset
    present = lambda name: (folder / name).is_file() or (name in DECODED and (folder / DECODED[name]).is_file())
    return folder if all(present(remote.name) for remote in SOURCES[dataset]) else None


def sha256_of(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _gunzipped_sha256(path: Path) -> Optional[str]:
    """SHA-256 of a gzip file's decompressed data; None when it is not valid gzip."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def _check_gunzipped(path: Path, remote: Remote) -> None:
    digest = _gunzipped_sha256(path)
    if digest is None:
        raise FetchError(f"{remote.url}: not valid gzip data; nothing was saved")
    if digest != remote.gunzip_sha256:
        raise FetchError(f"{remote.url}: SHA-256 of the decompressed data is {digest}, expected "
                         f"{remote.gunzip_sha256}; nothing was saved")


def download(remote: Remote, target, timeout: float = 60.0, advance: Callable[[int], None] = lambda n: None) -> Path:
    """Download ``remote.url`` to ``target`` atomically: into a temporary file beside it, checked
    (length against Content-Length, SHA-256, gunzipped SHA-256), then renamed. Raises
    :class:`FetchError` with one line naming the URL and what went wrong; the temporary file is
    removed on every failure. ``advance(n)`` is called with each chunk's byte count."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h, received = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(remote.url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        h.update(chunk)
                        received += len(chunk)
                        advance(len(chunk))
            except http.client.IncompleteRead as e:
                received += len(e.partial)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                raise FetchError(f"could not download {remote.url}: {getattr(e, 'reason', None) or e}") from None
            out.flush()
            os.fsync(out.fileno())
        if length is not None and received != int(length):
            raise FetchError(f"{remote.url}: truncated download, {received} of {length} bytes; nothing was saved")
        if h.hexdigest() != remote.sha256:
            raise FetchError(f"{remote.url}: SHA-256 {h.hexdigest()} does not match the expected {remote.sha256} "
                             f"({received} bytes received); nothing was saved")
        if remote.gunzip_sha256:
            _check_gunzipped(tmp, remote)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a saved file honours the umask
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch(dataset: str, data_dir=None, sources: Mapping[str, tuple] = SOURCES, timeout: float = 60.0,
          progress=None, note: Callable[[str], None] = lambda message: None) -> Path:
    """Download ``dataset`` (a key of ``sources``) into ``<data_dir>/<dataset>/`` unless its
    files are already there with the right digests, and return that folder.

    A file already there is kept when its SHA-256 matches, or, for a gzipped file, when its
    decompressed data matches (the same data with other gzip framing); otherwise ``note`` says
    why it is downloaded again. A failed download leaves no file and no folder it created.

    Args:
        dataset: "mnist", "omniglot" or "20newsgroups".
        data_dir: the data directory, default :func:`default_data_dir`.
        sources: the table of URLs and digests (tests pass their own).
        timeout: seconds a connection may stay silent before the download fails.
        progress: optional ``progress(description, total)`` context manager factory yielding an
            ``advance(n)`` function, as the CLI's progress bars.
        note: called with one line for each file that is there but downloaded again, and why.

    Returns:
        The dataset's folder, which the matching loader of :mod:`ablo.data` reads.
    """
    if dataset not in sources:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(sources)}")
    folder = Path(data_dir if data_dir is not None else default_data_dir()).expanduser() / dataset
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    progress = progress or _no_progress
    fetched = False
    try:
        for remote in sources[dataset]:
            target = folder / remote.name
            if target.is_file():
                if sha256_of(target) == remote.sha256:
                    continue
                if remote.gunzip_sha256 and _gunzipped_sha256(target) == remote.gunzip_sha256:
                    continue  # the published data in other gzip framing: what the loader reads is the same
                note(f"{dataset}: {target} is there but its SHA-256 differs from the published file's (damaged, "
                     f"or other data under this name); downloading it again")
            elif target.exists():
                raise FetchError(f"{target} is a folder where {remote.name} should be: move it away and fetch again")
            with progress(f"{dataset}: {remote.name}", None) as advance:
                download(remote, target, timeout, advance)
            fetched = True
        if dataset in CONVERSIONS:
            CONVERSIONS[dataset](folder, fetched, progress)
    except BaseException:
        for d in made:  # folders this call created and left empty
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
            else:
                break
        raise
    return folder


@contextlib.contextmanager
def _no_progress(description, total):
    yield lambda n=1: None


def _omniglot_npz(folder: Path, fetched: bool, progress) -> None:
    """Decode each downloaded Omniglot zip once into the npz the loader reads fastest."""
    from .omniglot import zip_to_npz

    for zip_name, npz_name in DECODED.items():
        archive, npz = folder / zip_name, folder / npz_name
        if archive.is_file() and (fetched or not npz.is_file()):
            with progress(f"omniglot: decoding {archive.name}", None):
                zip_to_npz(archive, npz)


#: downloaded file -> the file :data:`CONVERSIONS` decodes from it, which the loader reads instead.
DECODED = {f"images_{split}.zip": f"images_{split}.npz" for split in ("background", "evaluation")}

#: dataset -> ``convert(folder, fetched, progress)`` run after its files are in place: the
#: formats the loaders read fastest, derived from the verified downloads.
CONVERSIONS = {"omniglot": _omniglot_npz}
