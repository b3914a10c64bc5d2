"""Loaders on small files made here (every format and failure mode), plus real-data smoke tests
that skip when ../shared/data is absent."""

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from ablo.data import load_digits, load_mnist, load_newsgroups, load_omniglot, read_idx
from ablo.data.omniglot import resize

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def idx_bytes(a: np.ndarray) -> bytes:
    return b"\0\0\x08" + bytes([a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()


def write_mnist(d: Path, gz: bool, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, a in arrays.items():
        data = idx_bytes(a)
        (d / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_gz_and_raw(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz)
    data = load_mnist(tmp_path)
    x, y = data["train"]
    assert x.shape == (6, 784) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x * 255, arrays["train-images-idx3-ubyte"].reshape(6, -1), atol=1e-4)
    np.testing.assert_array_equal(data["test"][1], arrays["t10k-labels-idx1-ubyte"])


def test_loaders_find_their_subfolder_of_a_data_root(tmp_path):
    """A root like ../shared/data works too: mnist/, omniglot/, 20newsgroups/ below it."""
    (tmp_path / "mnist").mkdir()
    write_mnist(tmp_path / "mnist", gz=True)
    assert load_mnist(tmp_path)["train"][0].shape == (6, 784)
    (tmp_path / "omniglot").mkdir()
    np.savez(tmp_path / "omniglot" / "images_evaluation.npz", images=omniglot_images())
    assert load_omniglot(tmp_path, "evaluation", size=6).images.shape == (3, 2, 6, 6)
    write_bydate_folders(tmp_path / "20newsgroups")
    assert load_newsgroups(tmp_path)["groups"] == ["alt.atheism", "sci.space"]


def test_read_idx_other_dtypes(tmp_path):
    a = (np.arange(12).reshape(3, 4) - 5).astype(">i4")
    p = tmp_path / "a.idx"
    p.write_bytes(b"\0\0\x0c\x02" + np.array(a.shape, ">u4").tobytes() + a.tobytes())
    np.testing.assert_array_equal(read_idx(p), a)


def test_mnist_truncated_file_is_named(tmp_path):
    write_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        load_mnist(tmp_path)


def test_mnist_truncated_gzip_is_named(tmp_path):
    write_mnist(tmp_path, gz=True)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_mnist_bad_magic_and_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5)))
    with pytest.raises(ValueError, match="6 images.*5 labels"):
        load_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_mnist(tmp_path)


def test_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nope")


def omniglot_images(chars=3, drawers=2, n=12):
    rng = np.random.default_rng(1)
    return rng.random((chars, drawers, n, n)) < 0.8  # True = white paper


def test_omniglot_npz_and_png_folders_agree(tmp_path):
    from PIL import Image

    paper = omniglot_images()
    npz_dir, png_dir = tmp_path / "npz", tmp_path / "png"
    npz_dir.mkdir()
    np.savez(npz_dir / "images_background.npz", images=paper, labels=np.repeat(np.arange(3)[:, None], 2, 1))
    (npz_dir / "char_id_to_alphabet.json").write_text(json.dumps({"1": "A", "2": "A", "3": "B", "4": "C"}))
    alphabet_of = ["A", "A", "B"]
    for c in range(3):
        folder = png_dir / "images_background" / alphabet_of[c] / f"character{c + 1:02d}"
        folder.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(paper[c, k].astype(np.uint8) * 255).convert("1").save(folder / f"{c}_{k:02d}.png")
    a, b = load_omniglot(npz_dir, size=12), load_omniglot(png_dir, size=12)
    np.testing.assert_allclose(a.images, 1.0 - paper, atol=1e-6)  # ink = 1
    np.testing.assert_allclose(b.images, a.images, atol=1e-6)
    assert a.alphabets == b.alphabets == alphabet_of
    small = load_omniglot(npz_dir, size=4)
    assert small.images.shape == (3, 2, 4, 4)
    # area resampling keeps the mean ink of every image
    np.testing.assert_allclose(small.images.mean((-1, -2)), a.images.mean((-1, -2)), atol=1e-5)


def test_omniglot_evaluation_alphabets_from_the_end_of_the_id_map(tmp_path):
    np.savez(tmp_path / "images_evaluation.npz", images=omniglot_images(chars=2))
    (tmp_path / "char_id_to_alphabet.json").write_text(json.dumps({"1": "A", "2": "B", "3": "C", "4": "D"}))
    assert load_omniglot(tmp_path, "evaluation", size=12).alphabets == ["C", "D"]


def test_resize_is_box_average_when_divisible():
    x = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    np.testing.assert_allclose(resize(x, 2), x.reshape(2, 2, 2, 2).mean((1, 3)), atol=1e-6)


def test_omniglot_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_background"):
        load_omniglot(tmp_path)
    (tmp_path / "images_background.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="images_background.npz"):
        load_omniglot(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_omniglot(tmp_path, split="train")
    folder = tmp_path / "png" / "images_evaluation" / "Alpha" / "character01"
    folder.mkdir(parents=True)
    (folder / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match="01.png"):
        load_omniglot(tmp_path / "png", "evaluation")


POSTS = {"train": {"alt.atheism": ["god is not here", "no god at all"], "sci.space": ["rockets to the moon",
                                                                                         "orbit of the moon"]},
         "test": {"alt.atheism": ["god and moon"], "sci.space": ["rocket orbit"]}}


def write_bydate_folders(root: Path):
    for split, groups in POSTS.items():
        for g, texts in groups.items():
            d = root / f"20news-bydate-{split}" / g
            d.mkdir(parents=True)
            for i, t in enumerate(texts):
                (d / str(1000 + i)).write_bytes(t.encode("latin-1"))


def test_newsgroups_folders_and_archive_agree(tmp_path):
    write_bydate_folders(tmp_path / "src")
    arch = tmp_path / "arch"
    arch.mkdir()
    with tarfile.open(arch / "20news-bydate.tar.gz", "w:gz") as tar:
        for split in POSTS:
            tar.add(tmp_path / "src" / f"20news-bydate-{split}", arcname=f"20news-bydate-{split}")
    a, b = load_newsgroups(tmp_path / "src"), load_newsgroups(arch)
    assert a["groups"] == b["groups"] == ["alt.atheism", "sci.space"]
    Xa, ya = a["train"]
    assert scipy.sparse.issparse(Xa) and Xa.dtype == np.float32 and Xa.shape[0] == 4
    np.testing.assert_array_equal(ya, [0, 0, 1, 1])
    np.testing.assert_allclose(scipy.sparse.linalg.norm(Xa, axis=1), 1.0, atol=1e-6)  # TF-IDF rows ℓ2-normalised
    for split in ("train", "test"):
        assert (a[split][0] != b[split][0]).nnz == 0
        np.testing.assert_array_equal(a[split][1], b[split][1])
    assert a["test"][0].shape == (2, a["vocabulary_size"])


def test_newsgroups_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="20news-bydate"):
        load_newsgroups(tmp_path)
    (tmp_path / "20news-bydate.tar.gz").write_bytes(gzip.compress(b"not a tar")[:12])
    with pytest.raises(ValueError, match="20news-bydate.tar.gz"):
        load_newsgroups(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz"):
        pass
    (tmp_path / "20news-bydate.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="no files under 20news-bydate-train"):
        load_newsgroups(tmp_path)


def test_digits_default_data():
    x, y = load_digits()
    assert x.shape == (1797, 64) and 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) == set(range(10))


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent")


@needs_shared
def test_real_mnist():
    data = load_mnist(SHARED)  # the root: finds mnist/
    assert data["train"][0].shape == (60000, 784) and data["test"][0].shape == (10000, 784)
    assert np.bincount(data["test"][1]).tolist()[:2] == [980, 1135]


@needs_shared
@pytest.mark.slow
def test_real_omniglot():
    o = load_omniglot(SHARED / "omniglot", "evaluation", size=28)
    assert o.images.shape == (659, 20, 28, 28) and len(set(o.alphabets)) == 20
    assert 0.02 < o.images.mean() < 0.3  # ink is the minority of pixels


@needs_shared
@pytest.mark.slow
def test_real_newsgroups():
    d = load_newsgroups(SHARED / "20newsgroups")
    assert d["train"][0].shape[0] == 11314 and d["test"][0].shape[0] == 7532 and len(d["groups"]) == 20


# --- bad data is refused with the file's name ------------------------------------------------------
def idx_float_bytes(a: np.ndarray) -> bytes:
    return b"\0\0\x0d" + bytes([a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.astype(">f4").tobytes()


def bad_pixels(value):
    a = np.random.default_rng(0).integers(0, 256, (6, 28, 28)).astype(np.float32)
    a[2, 3, 4] = value
    return idx_float_bytes(a)


@pytest.mark.parametrize("name,data,message", [
    ("train-images-idx3-ubyte", bad_pixels(np.nan), r"1 non-finite pixel.*index \(2, 3, 4\)"),
    ("train-images-idx3-ubyte", bad_pixels(np.inf), "non-finite pixel"),
    ("train-images-idx3-ubyte", bad_pixels(300.0), r"span \[0, 300\], expected \[0, 255\]"),
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((6, 28, 27))), r"shape \(n, 28, 28\); got \(6, 28, 27\)"),
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((6, 784))), r"got \(6, 784\)"),
    ("train-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 10, 3, 4])), r"1 label\(s\) outside 0..9, the first 10 at index 3"),
    ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros((4, 1))), r"labels of shape \(n,\); got \(4, 1\)"),
    ("t10k-labels-idx1-ubyte", idx_float_bytes(np.zeros(4)), "labels of type float32"),
])
def test_mnist_bad_data_is_named(tmp_path, name, data, message):
    write_mnist(tmp_path, gz=False)
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=f"{name}: .*{message}"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(images=np.where(d["images"], 1.0, 0.0).astype(np.float32) * np.float32("nan")),
     "non-finite pixel"),
    (lambda d: d.update(images=d["images"].astype(np.float32) * 2), r"span \[0, 2\], expected \[0, 1\]"),
    (lambda d: d.update(images=d["images"][..., :-1]), r"expected images \(characters, drawers, n, n\)"),
    (lambda d: d.update(labels=np.array([[0, 0], [1, 1], [2, 3]])), r"label\(s\) outside 0..2, the first 3 at index 5"),
    (lambda d: d.update(labels=np.arange(3)), r"labels of shape \(3,\), expected \(3, 2\)"),
    (lambda d: d.update(alphabets=np.array(["A", "B"])), "2 alphabet names for 3 characters"),
])
def test_omniglot_bad_data_is_named(tmp_path, change, message):
    arrays = {"images": omniglot_images(), "labels": np.repeat(np.arange(3)[:, None], 2, 1)}
    np.savez(tmp_path / "images_background.npz", **arrays)
    assert load_omniglot(tmp_path, size=12).images.shape == (3, 2, 12, 12)  # the good file loads
    change(arrays)
    np.savez(tmp_path / "images_background.npz", **arrays)
    with pytest.raises(ValueError, match=f"images_background.npz: .*{message}"):
        load_omniglot(tmp_path, size=12)


def test_omniglot_zip_archive_errors_are_named(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="images_background.zip: corrupt or truncated zip"):
        load_omniglot(tmp_path)
    import zipfile

    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as z:
        z.writestr("images_background/A/character01/01.png", b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match="images_background.zip:images_background/A/character01/01.png"):
        load_omniglot(tmp_path)
