"""``ablo data fetch`` against a loopback HTTP server serving small fixture files (the network is
closed to tests): a good file, a wrong checksum, a truncated body, a missing file. Each failure is
one clear line, and nothing half-written is left in the data directory; the loaders read exactly
what the fetch wrote."""

import gzip
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from ablo.data import fetch as fetch_mod
from ablo.data import load_mnist, load_newsgroups, load_omniglot
from test_cli import call
from test_data import POSTS, SHARED, idx_bytes, needs_shared, omniglot_images, write_bydate_folders


class Server:
    """Serves ``files`` {path: body} on 127.0.0.1; ``declared`` {path: Content-Length} may claim
    more bytes than the body holds (a truncated download). Counts GET requests per path."""

    def __init__(self):
        self.files, self.declared, self.hits = {}, {}, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body = server.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(server.declared.get(self.path, len(body))))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def remote(self, name, body, digest_of=None, gunzip_sha256=None):
        """Serve ``body`` at /name and return the Remote entry expecting ``digest_of`` (default: body)."""
        self.files["/" + name] = body
        digest = hashlib.sha256(body if digest_of is None else digest_of).hexdigest()
        return fetch_mod.Remote(name, self.url("/" + name), digest, gunzip_sha256)


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_is_saved_verified_and_not_fetched_twice(server, tmp_path):
    body = b"hello ablo" * 1000
    sources = {"demo": (server.remote("a.bin", body),)}
    folder = fetch_mod.fetch("demo", tmp_path, sources)
    assert folder == tmp_path / "demo" and (folder / "a.bin").read_bytes() == body
    assert leftovers(folder) == ["a.bin"]  # no temporary file left
    fetch_mod.fetch("demo", tmp_path, sources)
    assert server.hits["/a.bin"] == 1  # present with the right digest: not downloaded again
    (folder / "a.bin").write_bytes(b"damaged")
    fetch_mod.fetch("demo", tmp_path, sources)
    assert server.hits["/a.bin"] == 2 and (folder / "a.bin").read_bytes() == body  # wrong digest: replaced


def test_wrong_checksum_is_refused_and_nothing_kept(server, tmp_path):
    sources = {"demo": (server.remote("a.bin", b"what the server sends", digest_of=b"what was published"),)}
    with pytest.raises(fetch_mod.FetchError) as e:
        fetch_mod.fetch("demo", tmp_path, sources)
    msg = str(e.value)
    assert "\n" not in msg and "a.bin" in msg and "SHA-256" in msg and sha(b"what was published") in msg
    assert leftovers(tmp_path / "demo") == []


def test_truncated_download_is_refused_and_nothing_kept(server, tmp_path):
    body = b"x" * 5000
    sources = {"demo": (server.remote("a.bin", body),)}
    server.declared["/a.bin"] = 9000  # the connection closes after 5000 of the announced 9000 bytes
    with pytest.raises(fetch_mod.FetchError, match=r"truncated download, 5000 of 9000 bytes") as e:
        fetch_mod.fetch("demo", tmp_path, sources)
    assert "\n" not in str(e.value)
    assert leftovers(tmp_path / "demo") == []


def test_a_good_file_stays_when_a_later_one_fails(server, tmp_path):
    sources = {"demo": (server.remote("a.bin", b"fine"), fetch_mod.Remote("b.bin", server.url("/b.bin"), sha(b"")))}
    with pytest.raises(fetch_mod.FetchError, match="could not download .*b.bin.*Not Found"):
        fetch_mod.fetch("demo", tmp_path, sources)
    assert leftovers(tmp_path / "demo") == ["a.bin"]


def test_gunzipped_digest_is_checked_too(server, tmp_path):
    raw = idx_bytes(np.arange(5))
    good = server.remote("good.gz", gzip.compress(raw), gunzip_sha256=sha(raw))
    bad = server.remote("bad.gz", gzip.compress(raw), gunzip_sha256=sha(b"other data"))
    fetch_mod.fetch("demo", tmp_path, {"demo": (good,)})
    with pytest.raises(fetch_mod.FetchError, match="decompressed data"):
        fetch_mod.fetch("demo", tmp_path, {"demo": (bad,)})
    assert leftovers(tmp_path / "demo") == ["good.gz"]


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        fetch_mod.fetch("cifar", "/nonexistent")


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLO_DATA_DIR", str(tmp_path / "d"))
    assert fetch_mod.default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("ABLO_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch_mod.default_data_dir() == tmp_path / "xdg" / "ablo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fetch_mod.default_data_dir() == tmp_path / "home" / ".cache" / "ablo"


def test_the_real_table_names_what_the_loaders_read():
    """Every URL is https, every digest 64 hex digits, and the file names are the loaders' own."""
    assert set(fetch_mod.SOURCES) == {"mnist", "omniglot", "20newsgroups"}
    for remotes in fetch_mod.SOURCES.values():
        for r in remotes:
            assert r.url.startswith("https://") and len(r.sha256) == 64 and int(r.sha256, 16) >= 0
    assert {r.name for r in fetch_mod.SOURCES["mnist"]} == {
        f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")}
    assert {r.name for r in fetch_mod.SOURCES["omniglot"]} == {"images_background.zip", "images_evaluation.zip"}
    assert [r.name for r in fetch_mod.SOURCES["20newsgroups"]] == ["20news-bydate.tar.gz"]


# --- the CLI end to end: what `ablo data fetch` writes, the loaders read -----------------------------
def mnist_remotes(server):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)), "train-labels-idx1-ubyte": np.arange(6),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)), "t10k-labels-idx1-ubyte": np.arange(4)}
    raw = {k: idx_bytes(a) for k, a in arrays.items()}
    return tuple(server.remote(k + ".gz", gzip.compress(raw[k]), gunzip_sha256=sha(raw[k])) for k in raw), arrays


def omniglot_zip(split, paper):
    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c in range(paper.shape[0]):
            for k in range(paper.shape[1]):
                png = io.BytesIO()
                Image.fromarray(paper[c, k].astype(np.uint8) * 255).convert("1").save(png, format="PNG")
                z.writestr(f"images_{split}/Alpha{c // 2}/character{c + 1:02d}/{c:04d}_{k + 1:02d}.png", png.getvalue())
    return buf.getvalue()


def newsgroups_archive(tmp_path):
    write_bydate_folders(tmp_path / "posts")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in POSTS:
            tar.add(tmp_path / "posts" / f"20news-bydate-{split}", arcname=f"20news-bydate-{split}")
    return buf.getvalue()


def test_cli_fetch_writes_what_the_loaders_read(server, tmp_path, monkeypatch, capsys):
    mnist, arrays = mnist_remotes(server)
    paper = omniglot_images(chars=3, drawers=2, n=12)
    omniglot = tuple(server.remote(f"images_{s}.zip", omniglot_zip(s, paper)) for s in ("background", "evaluation"))
    news = (server.remote("20news-bydate.tar.gz", newsgroups_archive(tmp_path)),)
    monkeypatch.setattr(fetch_mod, "SOURCES", {"mnist": mnist, "omniglot": omniglot, "20newsgroups": news})
    root = tmp_path / "cache"
    monkeypatch.setenv("ABLO_DATA_DIR", str(root))  # the default data directory
    code, out, err = call(["data", "fetch", "all"], capsys)
    assert code == 0, err
    assert "by default" in out and str(root / "mnist") in out
    from ablo.experiments import get

    assert get("hypercleaning").make_config().data_dir == str(root / "mnist")  # what runs now read
    x, y = load_mnist(root)["train"]
    np.testing.assert_allclose(x * 255, arrays["train-images-idx3-ubyte"].reshape(6, -1), atol=1e-4)
    np.testing.assert_array_equal(y, np.arange(6))
    o = load_omniglot(root, "evaluation", size=12)
    np.testing.assert_allclose(o.images, 1.0 - paper, atol=1e-6)
    assert o.alphabets == ["Alpha0", "Alpha0", "Alpha1"]
    # the zips were also decoded once into the npz the loader reads first; the zip alone reads the same
    assert sorted(p.name for p in (root / "omniglot").iterdir()) == [
        "images_background.npz", "images_background.zip", "images_evaluation.npz", "images_evaluation.zip"]
    (root / "omniglot" / "images_evaluation.npz").unlink()
    from_zip = load_omniglot(root, "evaluation", size=12)
    np.testing.assert_array_equal(from_zip.images, o.images)
    assert from_zip.alphabets == o.alphabets
    code, _, err = call(["data", "fetch", "omniglot"], capsys)  # the missing npz is made again, nothing downloaded
    assert code == 0, err
    assert (root / "omniglot" / "images_evaluation.npz").is_file()
    assert server.hits["/images_evaluation.zip"] == 1
    assert load_newsgroups(root)["groups"] == ["alt.atheism", "sci.space"]
    for name in ("mnist", "omniglot", "20newsgroups"):
        assert not [p for p in (root / name).iterdir() if p.name.startswith(".")]  # no temporary files


def test_cli_fetch_failures_are_one_line(server, tmp_path, monkeypatch, capsys):
    body = b"y" * 3000
    remote = server.remote("a.bin", body)
    monkeypatch.setattr(fetch_mod, "SOURCES", {"mnist": (remote,)})
    server.declared["/a.bin"] = 4000
    code, _, err = call(["data", "fetch", "mnist", "--data-dir", str(tmp_path)], capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "truncated download" in lines[0] and "Traceback" not in err
    assert leftovers(tmp_path / "mnist") == []
    code, _, err = call(["data", "fetch", "cifar", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "unknown dataset 'cifar'" in err


def test_loader_errors_point_at_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="ablo data fetch mnist"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="ablo data fetch omniglot"):
        load_omniglot(tmp_path)
    with pytest.raises(FileNotFoundError, match="ablo data fetch 20newsgroups"):
        load_newsgroups(tmp_path)


def test_version(capsys):
    import ablo

    code, out, _ = call(["--version"], capsys)
    assert code == 0 and out.strip() == f"ablo {ablo.__version__}"


@needs_shared
def test_mnist_idx_digests_match_the_real_files():
    """The digests of the decompressed IDX data are the real MNIST's (the shared copy's gzip
    framing differs from the canonical one, its data does not)."""
    for remote in fetch_mod.SOURCES["mnist"]:
        data = gzip.decompress((SHARED / "mnist" / remote.name).read_bytes())
        assert sha(data) == remote.gunzip_sha256, remote.name
