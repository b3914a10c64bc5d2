"""What a careless or hostile user, a scheduler, another dataset or a tired user at 2 am does to a
run folder, table-driven: every refusal exits 2 with one line naming the cause, and leaves every
byte of the folder it aimed at as it was; what is allowed leaves every file ablo did not write
byte-identical."""

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _cli_run import ablo, one_error_line
from test_data import SHARED, write_mnist

from ablo import cli
from ablo.data import load_mnist
from ablo.data.content import UNKNOWN, dataset_files, identify_idx
from ablo.runfolder import MANIFEST, RunFolder, read_manifest

SRC = str(Path(cli.__file__).resolve().parents[1])


def snapshot(folder: Path) -> dict:
    """{relative path: SHA-256 or "<dir>" or "-> target"} of everything below ``folder``."""
    if not folder.exists() and not folder.is_symlink():
        return {}
    out = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(top) / name
            rel = str(p.relative_to(folder))
            out[rel] = (f"-> {os.readlink(p)}" if p.is_symlink() else "<dir>" if p.is_dir()
                        else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A finished toy2d --tiny run whose copies the cases aim at."""
    out = tmp_path_factory.mktemp("prev") / "run"
    code, _, err = ablo("run", "toy2d", "--tiny", "--out", out)
    assert code == 0, err
    return out


def test_a_finished_run_folder_holds_no_lock_and_lists_its_files(previous):
    assert not (previous / ".lock").exists()
    m = read_manifest(previous)
    assert m["ablo_run_folder"] == 1 and m["kept"] == []
    assert sorted(m["files"]) == sorted(f for f in snapshot(previous) if f != MANIFEST)


# --- the table -----------------------------------------------------------------------------------
def copy_of(previous, tmp):
    shutil.copytree(previous, tmp / "run")
    return tmp / "run"


def browser_extension(previous, tmp):
    """A folder that has nothing to do with ablo, with a manifest.json of its own."""
    d = tmp / "extension"
    (d / "src").mkdir(parents=True)
    (d / "src" / "app.js").write_text("console.log(1)\n")
    (d / "NOTES.txt").write_text("my notes\n")
    (d / MANIFEST).write_text(json.dumps({"manifest_version": 3, "name": "tab sorter", "experiment": "toy2d"}))
    return d


def damaged_manifest(previous, tmp):
    d = copy_of(previous, tmp)
    text = (d / MANIFEST).read_text()
    (d / MANIFEST).write_text(text[: len(text) // 2])  # a disk that filled up mid-write by another tool
    return d


def manifest_is_a_list(previous, tmp):
    d = copy_of(previous, tmp)
    (d / MANIFEST).write_text("[1, 2]\n")
    return d


def manifest_without_marker(previous, tmp):
    d = copy_of(previous, tmp)
    m = json.loads((d / MANIFEST).read_text())
    del m["ablo_run_folder"]
    (d / MANIFEST).write_text(json.dumps(m))
    return d


def manifest_listing_outside_files(previous, tmp):
    d = copy_of(previous, tmp)
    m = json.loads((d / MANIFEST).read_text())
    m["files"] = ["../../etc/passwd"]  # an edited manifest must not make --overwrite reach out
    (d / MANIFEST).write_text(json.dumps(m))
    return d


def checkpoints_is_a_file(previous, tmp):
    d = copy_of(previous, tmp)
    (d / "checkpoints").write_text("not a folder\n")
    return d


def dangling_symlink(previous, tmp):
    (tmp / "runs").symlink_to(tmp / "unmounted-disk")
    return tmp / "runs"


def under_a_file(previous, tmp):
    (tmp / "notes.txt").write_text("x")
    return tmp / "notes.txt" / "run"


def new_folder(previous, tmp):
    return tmp / "new" / "run"


def data_file(tmp):
    (tmp / "mnist.txt").write_text("not a folder")
    return tmp / "mnist.txt"


def data_with_empty_idx(tmp):
    d = tmp / "data"
    d.mkdir()
    write_mnist(d, gz=True, n_train=0)
    return d


def data_with_folder_for_file(tmp):
    d = tmp / "data"
    d.mkdir()
    write_mnist(d, gz=True)
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    (d / "t10k-images-idx3-ubyte.gz").mkdir()  # an unzip tool that made a folder of the name
    return d


TOY = ["run", "toy2d", "--tiny"]
HC = ["run", "hypercleaning", "--tiny", "-m", "fom"]

#: (id, folder maker, data maker or None, arguments (OUT and DATA replaced), message in the line)
CASES = [
    ("foreign manifest, --overwrite", browser_extension, None, TOY + ["--out", "OUT", "--overwrite"],
     "manifest.json is not an ablo manifest (no ablo_run_folder"),
    ("foreign manifest, plain run", browser_extension, None, TOY + ["--out", "OUT"], "is not an ablo manifest"),
    ("foreign manifest, --resume", browser_extension, None, TOY + ["--out", "OUT", "--resume"],
     "is not an ablo manifest"),
    ("damaged manifest, --resume", damaged_manifest, None, TOY + ["--out", "OUT", "--resume"],
     "manifest.json is not an ablo manifest (unreadable"),
    ("damaged manifest, --overwrite", damaged_manifest, None, TOY + ["--out", "OUT", "--overwrite"],
     "is not an ablo manifest (unreadable"),
    ("manifest a JSON list", manifest_is_a_list, None, TOY + ["--out", "OUT", "--overwrite"], "a JSON list"),
    ("manifest without marker", manifest_without_marker, None, TOY + ["--out", "OUT", "--overwrite"],
     "no ablo_run_folder"),
    ("manifest listing ../ paths", manifest_listing_outside_files, None, TOY + ["--out", "OUT", "--overwrite"],
     "files is not a list of relative paths inside the folder"),
    ("checkpoints a file, --resume", checkpoints_is_a_file, None, TOY + ["--out", "OUT", "--resume"],
     "is a file where the run keeps a folder of checkpoints"),
    ("--out a dangling symlink", dangling_symlink, None, TOY + ["--out", "OUT"], "which does not exist"),
    ("--out below a file", under_a_file, None, TOY + ["--out", "OUT"], "notes.txt is a file, not a folder"),
    ("a run the step-size check refuses", new_folder, None, TOY + ["--out", "OUT", "--set", "inner_lr=2.5"],
     "inner_lr = 2.5 is at or above 2/L"),
    ("--data-dir a file", new_folder, data_file, HC + ["--out", "OUT", "--data-dir", "DATA"],
     "mnist.txt is a file, not a folder"),
    ("an IDX file with 0 images", new_folder, data_with_empty_idx, HC + ["--out", "OUT", "--data-dir", "DATA"],
     "train-images-idx3-ubyte.gz: the IDX file holds 0 images"),
    ("a folder where a file should be", new_folder, data_with_folder_for_file,
     HC + ["--out", "OUT", "--data-dir", "DATA"], "t10k-images-idx3-ubyte.gz is a folder where"),
    ("--seed given twice", copy_of, None, TOY + ["--out", "OUT", "--seed", "1", "--seed", "2"],
     "--seed given 2 times ('1', '2')"),
    ("--out given twice", copy_of, None, TOY + ["--out", "OUT", "--out=elsewhere"], "--out given 2 times"),
    ("a seed JAX would wrap to 0", copy_of, None, TOY + ["--out", "OUT", "--resume", "--set", "seed=4294967296"],
     "seed: 4294967296 is out of range; allowed: at most 4294967295"),
    ("steps beyond int32", copy_of, None, TOY + ["--out", "OUT", "--resume", "--steps", "2147483648"],
     "outer_steps: 2147483648 is out of range"),
    ("experiment typo", copy_of, None, ["run", "toy2", "--out", "OUT"], "did you mean 'toy2d'"),
    ("config key typo", copy_of, None, TOY + ["--out", "OUT", "--inner-lrr", "0.1"], "did you mean 'inner_lr'"),
    ("estimator typo", copy_of, None, TOY + ["--out", "OUT", "-m", "fmo"], "did you mean 'fom'"),
    ("2 am: the same command again", copy_of, None, TOY + ["--out", "OUT"], "already holds a run of toy2d"),
    ("2 am: --resume and --overwrite", copy_of, None, TOY + ["--out", "OUT", "--resume", "--overwrite"],
     "not both"),
    ("compare a folder without results", copy_of, None, ["compare", "OUT/figs"], "no summary.json"),
    ("compare a manifest as if a summary", copy_of, None, ["compare", "OUT/manifest.json"], "not an ablo summary"),
    ("help of an experiment typo", copy_of, None, ["run", "hypercleanin", "--help"], "did you mean 'hypercleaning'"),
    ("fetch typo", copy_of, None, ["data", "fetch", "mnsit", "--data-dir", "OUT"], "did you mean 'mnist'"),
]


@pytest.mark.parametrize("name, make_folder, make_data, args, message", CASES, ids=[c[0] for c in CASES])
def test_refused_with_one_line_and_nothing_changed(name, make_folder, make_data, args, message, previous, tmp_path,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = make_folder(previous, tmp_path)
    data = make_data(tmp_path) if make_data else None
    before, data_before = snapshot(folder), snapshot(data) if data else None
    around = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.replace("OUT", str(folder)).replace("DATA", str(data)) for a in args]
    code, _, err = ablo(*argv)
    assert code == 2, err
    line = one_error_line(err)
    assert message in line, line
    assert snapshot(folder) == before  # not a byte, not a lock, not a folder more
    if data:
        assert snapshot(data) == data_before
    assert sorted(p.name for p in tmp_path.iterdir()) == around  # a refused run leaves no folder behind


# --- what is allowed ---------------------------------------------------------------------------
def test_overwrite_replaces_only_what_the_previous_run_wrote(previous, tmp_path):
    """The user's ANALYSIS.md and figs/ in a run folder, and a link they made, survive --overwrite
    byte for byte; the old run's files are replaced by the new run's."""
    d = copy_of(previous, tmp_path)
    (d / "ANALYSIS.md").write_text("# what I found at 2 am\n")
    (d / "figs").mkdir()
    (d / "figs" / "mine.png").write_bytes(b"\x89PNG my figure")
    (d / "data-link").symlink_to(tmp_path)
    (d / "summary.json").write_text('{"edited": "by hand"}')  # ablo's file, edited: still ablo's to replace
    mine = {k: v for k, v in snapshot(d).items() if k.startswith(("ANALYSIS", "figs", "data-link"))}
    code, _, err = ablo(*TOY, "--out", d, "--overwrite", "--set", "inner_lr=0.05")
    assert code == 0, err
    after = snapshot(d)
    assert {k: after[k] for k in mine} == mine
    assert json.loads((d / "summary.json").read_text())["config"]["inner_lr"] == 0.05
    m = read_manifest(d)
    mine_files = [k for k, v in mine.items() if v != "<dir>"]
    assert sorted(m["kept"]) == sorted(mine_files) and not set(m["files"]) & set(mine)
    assert not (d / ".lock").exists() and not (d / ".replaced").exists()


def test_a_folder_left_by_a_kill_during_the_first_manifest_write_is_taken(tmp_path):
    """A kill between mkstemp and rename leaves .lock and .manifest.json.XXXXXXXX.tmp: that is an
    empty run folder, not someone's files."""
    from ablo.experiments import get

    d = tmp_path / "run"
    d.mkdir()
    (d / ".lock").write_text("")
    (d / ".manifest.json.k1ll3d_x.tmp").write_text('{"experi')
    cfg = get("toy2d").make_config(tiny=True)
    with RunFolder(d, "toy2d", cfg) as f:
        (f.path / "summary.json").write_text("{}")
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "summary.json"]
    d2 = tmp_path / "run2"
    d2.mkdir()
    (d2 / ".manifest.json.k1ll3d_x.tmp").write_text("")
    with RunFolder(d2, "toy2d", cfg, overwrite=True):  # --overwrite takes it too
        pass


def test_a_version_change_on_resume_is_printed_and_recorded(previous, tmp_path, monkeypatch):
    d = copy_of(previous, tmp_path)
    m = json.loads((d / MANIFEST).read_text())
    m["versions"] = dict(m["versions"], ablo="0.0.1", jax="0.3.0")
    (d / MANIFEST).write_text(json.dumps(m))
    monkeypatch.setattr(cli, "run_experiment", lambda *a: None)
    code, _, err = ablo(*TOY, "--out", d, "--resume")
    assert code == 0
    assert "ablo 0.0.1 -> " in err and "jax 0.3.0 -> " in err
    from ablo.experiments import get

    with RunFolder(d, "toy2d", get("toy2d").make_config(tiny=True), resume=True) as f:
        (f.path / "curves.csv").write_text("x\n")
    resumes = read_manifest(d)["resumes"]
    assert resumes[-1]["previous"]["ablo"] == "0.0.1" and resumes[-1]["versions"]["ablo"] != "0.0.1"


def test_an_internal_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def bug(*args):
        raise ValueError("an index went wrong inside ablo")

    monkeypatch.setattr(cli, "run_experiment", bug)
    with pytest.raises(ValueError, match="an index went wrong"):
        cli.main([*TOY, "--out", str(tmp_path / "r")])


def test_run_experiment_help_lists_its_config_keys():
    code, out, _ = ablo("run", "hypercleaning", "--help")
    assert code == 0 and "--overwrite" in out and "config keys of hypercleaning" in out
    assert "n_train = " in out and "outer_lr = " in out


# --- compare ----------------------------------------------------------------------------------
def summary(folder: Path, rows, dataset) -> Path:
    from ablo.experiments._paper import HYPERCLEANING_MODEL_PROTOCOL, HYPERCLEANING_PROTOCOL

    config = {**HYPERCLEANING_PROTOCOL, **HYPERCLEANING_MODEL_PROTOCOL["linear"], "model": "linear",
              "dataset": dataset}
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"experiment": "hypercleaning", "config": config,
                                                     "results": rows}))
    return folder


MNIST = {"name": "MNIST", "train_images": 60000, "test_images": 10000, "image_size": 28}


def test_compare_counts_only_finite_seeds(tmp_path):
    a = summary(tmp_path / "a", [{"method": "reverse", "K": 100, "seed": 0, "test_acc": 80.0},
                                 {"method": "reverse", "K": 100, "seed": 1, "test_acc": None}], MNIST)
    code, out, err = ablo("compare", a)
    assert code == 0, err
    assert "80 (n = 1; 1 NaN)" in out


def test_compare_shows_the_paper_figure_only_beside_the_paper_dataset(tmp_path):
    row = [{"method": "reverse", "K": 100, "seed": 0, "test_acc": 77.36}]
    code, out, _ = ablo("compare", summary(tmp_path / "mnist", row, MNIST))
    assert code == 0 and "88.33" in out
    for name in ("Fashion-MNIST", UNKNOWN):
        code, out, _ = ablo("compare", summary(tmp_path / name, row, dict(MNIST, name=name)))
        assert code == 0 and "88.33" not in out and "paper_" not in out


# --- datasets by content ---------------------------------------------------------------------------
def test_a_generated_idx_set_in_mnist_names_is_not_called_mnist(tmp_path):
    """Files named like MNIST, shaped like MNIST: their digests say they are not, so hypercleaning
    describes them as unknown data and the papers' figures are withheld."""
    from ablo.experiments import get
    from ablo.experiments._paper import hypercleaning_figures_withheld
    from ablo.problems.hypercleaning import load_splits

    write_mnist(tmp_path, gz=True)
    assert load_mnist(tmp_path)["name"] == UNKNOWN
    cfg = get("hypercleaning").make_config({"data_dir": str(tmp_path)}, tiny=True)
    _, _, described = load_splits(cfg.resolved(), np.random.default_rng(0))
    assert described["name"] == UNKNOWN
    assert "this run read unknown" in hypercleaning_figures_withheld({"dataset": described})


def test_fashion_mnist_is_known_by_its_published_digests():
    fashion = {"train-images": {"8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
               "train-labels": {"25c81989df183df01b3e8a0aad5dffbe"},
               "t10k-images": {"bef4ecab320f06d8554ea6380940ec79"},
               "t10k-labels": {"bb300cfdad3c16e7a12a480ee83cd310"}}
    assert identify_idx(fashion) == "Fashion-MNIST"
    assert identify_idx(dict(fashion, **{"t10k-labels": {"0" * 32}})) == UNKNOWN  # one file off: not Fashion-MNIST


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="the shared MNIST files are absent")
def test_the_real_mnist_is_named_mnist_whatever_its_gzip_framing(tmp_path):
    assert load_mnist(SHARED / "mnist")["name"] == "MNIST"
    for f in (SHARED / "mnist").glob("*-ubyte.gz"):  # decompressed copies: other bytes, the same IDX data
        (tmp_path / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    assert load_mnist(tmp_path)["name"] == "MNIST"


def test_the_fingerprint_and_the_loader_never_open_an_unrelated_file(tmp_path):
    """A 30 GB sparse file beside the dataset: neither the manifest's fingerprint nor the loader
    opens it (every open is seen by an audit hook), and changing it does not change the fingerprint."""
    from ablo.runfolder import data_fingerprint

    d = tmp_path / "mnist"
    d.mkdir()
    write_mnist(d, gz=True)
    big = d / "backup-2026.img"
    with open(big, "wb") as f:
        f.truncate(30 * 2 ** 30)
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "images_background.npz").write_bytes(b"other dataset")
    opened = []
    watching = [True]
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if watching and event == "open" else None)
    try:
        fp = data_fingerprint(tmp_path, "mnist")
        load_mnist(tmp_path)
    finally:
        watching.clear()
    assert not [p for p in opened if "backup-2026" in p or "images_background" in p]
    assert fp["files"] == 4 and sorted(p.name for p in dataset_files("mnist", tmp_path)) == sorted(
        p.name for p in d.iterdir() if "ubyte" in p.name)
    with open(big, "r+b") as f:
        f.write(b"changed")
    assert data_fingerprint(tmp_path, "mnist") == fp
    moved = tmp_path / "elsewhere"
    shutil.copytree(d, moved, ignore=shutil.ignore_patterns("backup-*"))
    assert data_fingerprint(moved, "mnist")["sha256"] == fp["sha256"]  # known by content, not by place


# --- a scheduler's SIGTERM ------------------------------------------------------------------------
CHILD = """
import os, signal, sys
from ablo import checkpoint, cli
save, sent = checkpoint.save, []
def save_then_get_terminated(directory, snap):  # the scheduler's SIGTERM arrives after the first checkpoint
    path = save(directory, snap)
    if not sent:
        sent.append(int(snap.step))
        os.kill(os.getpid(), signal.SIGTERM)
    return path
checkpoint.save = save_then_get_terminated
cli.main(sys.argv[1:])
"""


@pytest.mark.slow  # three hypercleaning runs in subprocesses: about 40 s of CPU
def test_sigterm_checkpoints_and_resume_gives_the_uninterrupted_numbers(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [*HC, "--steps", "4"]  # checkpoints every eval_every = 2 steps
    killed = subprocess.run([sys.executable, "-c", CHILD, *args, "--out", str(tmp_path / "a")], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == 143, killed.stderr
    lines = [ln for ln in killed.stderr.splitlines() if ln.startswith("ablo: ") and "resuming" not in ln]
    assert lines[-1] == ("ablo: terminated (SIGTERM) after outer step 2; run the same command with --resume to "
                         "continue"), killed.stderr
    assert not (tmp_path / "a" / "summary.json").exists() and (tmp_path / "a" / "checkpoints").is_dir()
    resumed = subprocess.run([sys.executable, "-m", "ablo", *args, "--out", str(tmp_path / "a"), "--resume"],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from outer step 2" in resumed.stderr
    whole = subprocess.run([sys.executable, "-m", "ablo", *args, "--out", str(tmp_path / "b")], env=env,
                           capture_output=True, text=True)  # a process like the others (pytest enables x64)
    assert whole.returncode == 0, whole.stderr
    rows = [json.loads((tmp_path / x / "summary.json").read_text())["results"] for x in "ab"]
    strip = lambda rs: [{k: v for k, v in r.items() if "second" not in k and k != "wall"} for r in rs]
    assert strip(rows[0]) == strip(rows[1])


def test_the_sigterm_handler_is_put_back_after_a_run():
    before = signal.getsignal(signal.SIGTERM)
    with cli.sigterm_as_interrupt() as terminated:
        assert signal.getsignal(signal.SIGTERM) is not before and not terminated()
    assert signal.getsignal(signal.SIGTERM) is before


# --- ablo data fetch offline ---------------------------------------------------------------------
def test_fetch_offline_tries_every_dataset_reports_each_and_leaves_no_folder(tmp_path, monkeypatch):
    from ablo.data import fetch as fetch_mod

    nowhere = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused
    monkeypatch.setattr(fetch_mod, "SOURCES", {
        "mnist": (fetch_mod.Remote("a.gz", nowhere + "a.gz", "0" * 64),),
        "omniglot": (fetch_mod.Remote("b.zip", nowhere + "b.zip", "0" * 64),)})
    root = tmp_path / "cache" / "ablo"
    code, out, err = ablo("data", "fetch", "mnist", "omniglot", "--data-dir", root)
    assert code == 2
    assert "2 of 2 datasets not fetched (mnist, omniglot)" in one_error_line(err)
    assert "mnist: not fetched (could not download" in out and "omniglot: not fetched (could not download" in out
    assert not (tmp_path / "cache").exists()


def test_fetch_says_why_it_downloads_a_file_again(tmp_path):
    from ablo.data import fetch as fetch_mod

    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "a.gz").write_bytes(gzip.compress(b"other data"))
    notes = []
    remote = fetch_mod.Remote("a.gz", "http://127.0.0.1:9/a.gz", "0" * 64, hashlib.sha256(b"idx").hexdigest())
    with pytest.raises(fetch_mod.FetchError):
        fetch_mod.fetch("mnist", tmp_path, {"mnist": (remote,)}, note=notes.append)
    assert len(notes) == 1 and "its SHA-256 differs from the published file's" in notes[0]
    (tmp_path / "mnist" / "a.gz").write_bytes(gzip.compress(b"idx", mtime=1))  # other framing, same data: kept
    assert fetch_mod.fetch("mnist", tmp_path, {"mnist": (remote,)}, note=notes.append) == tmp_path / "mnist"
    assert len(notes) == 1
