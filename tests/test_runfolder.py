"""RunFolder: the manifest, resume checks against config and data, locking, umask."""

import json
import os
import stat
from dataclasses import dataclass

import pytest

from ablo.atomic import atomic_write
from ablo.config import ExperimentConfig, option
from ablo.runfolder import RunFolder, RunFolderError, data_fingerprint


@dataclass(frozen=True)
class Cfg(ExperimentConfig):
    lr: float = option(0.1, "a step size", low=0, low_open=True)
    devices: int = option(1, "devices (does not change results)", low=1, hashed=False)


def finish(folder):
    atomic_write(folder / "summary.json", "{}")


def test_resume_with_other_data_is_refused_naming_the_data(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, content in ((a, b"one"), (b, b"two")):
        d.mkdir()
        (d / "train.bin").write_bytes(content)
    out = tmp_path / "run"
    with RunFolder(out, "exp", Cfg(), a) as f:
        finish(f.path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"] == data_fingerprint(a) and manifest["config"]["lr"] == 0.1
    with RunFolder(out, "exp", Cfg(), a, resume=True):  # same data, same config: fine
        pass
    with pytest.raises(RunFolderError, match="the data differ"):
        RunFolder(out, "exp", Cfg(), b, resume=True).__enter__()
    (a / "train.bin").write_bytes(b"ONE")  # the same folder with other contents
    with pytest.raises(RunFolderError, match="the data differ"):
        RunFolder(out, "exp", Cfg(), a, resume=True).__enter__()


def test_resume_names_the_config_keys_that_differ_but_not_unhashed_ones(tmp_path):
    with RunFolder(tmp_path / "r", "exp", Cfg()) as f:
        finish(f.path)
    with RunFolder(tmp_path / "r", "exp", Cfg(devices=2), resume=True):  # devices do not change results
        pass
    with pytest.raises(RunFolderError, match=r"lr: 0.1 -> 0.2"):
        RunFolder(tmp_path / "r", "exp", Cfg(lr=0.2), resume=True).__enter__()
    with pytest.raises(RunFolderError, match="holds a run of exp, not other"):
        RunFolder(tmp_path / "r", "other", Cfg(), resume=True).__enter__()


def test_a_folder_without_results_can_be_taken_by_a_new_run(tmp_path):
    with RunFolder(tmp_path / "r", "exp", Cfg()):
        pass  # e.g. the run failed before writing anything
    with RunFolder(tmp_path / "r", "exp", Cfg(lr=0.5)) as f:
        finish(f.path)
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["config"]["lr"] == 0.5


def test_the_lock_is_released_after_the_run(tmp_path):
    with RunFolder(tmp_path / "r", "exp", Cfg()):
        with pytest.raises(RunFolderError, match="another ablo process"):
            RunFolder(tmp_path / "r", "exp", Cfg()).__enter__()
    with RunFolder(tmp_path / "r", "exp", Cfg()):
        pass


def test_result_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = atomic_write(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_overwrite_that_fails_before_writing_puts_the_old_run_back(tmp_path):
    """`--overwrite` with a config the run then refuses must not cost the old results; once the
    new run has written its own files, or ends, the old ones are gone."""
    out = tmp_path / "r"
    with RunFolder(out, "exp", Cfg()) as f:
        finish(f.path)
        atomic_write(f.path / "checkpoints" / "fom" / "step_3.npz", b"x")
    with pytest.raises(ValueError, match="refused"):
        with RunFolder(out, "exp", Cfg(lr=0.5), overwrite=True):
            raise ValueError("refused by the experiment's own check")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "manifest.json", "summary.json"]
    assert json.loads((out / "manifest.json").read_text())["config"]["lr"] == 0.1
    with pytest.raises(KeyboardInterrupt):  # failed after writing: the new run's files stay, resumable
        with RunFolder(out, "exp", Cfg(lr=0.5), overwrite=True) as f:
            atomic_write(f.path / "curves.csv", "x\n")
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["curves.csv", "manifest.json"]
    with RunFolder(out, "exp", Cfg(lr=0.7), overwrite=True) as f:
        assert (out / ".replaced" / "curves.csv").exists()  # aside while the run is going
        finish(f.path)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "summary.json"]


def test_a_run_of_an_older_ablo_can_be_resumed_but_not_overwritten(tmp_path):
    """Manifests written before the marker field: same fields, no file list, the whole data folder
    fingerprinted. --resume continues them (checked against that fingerprint); --overwrite cannot
    tell their files from the user's and refuses."""
    from ablo.runfolder import _every_file_fingerprint, read_manifest

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.bin").write_bytes(b"one")
    out = tmp_path / "old"
    out.mkdir()
    cfg = Cfg()
    old = {"experiment": "exp", "config": cfg.hashed_dict(), "config_sha256": cfg.digest(), "unhashed": {},
           "data": dict(_every_file_fingerprint(data), files=1, bytes=3), "versions": {"ablo": "0.1"}}
    (out / "manifest.json").write_text(json.dumps(old))
    (out / "summary.json").write_text("{}")
    (out / "mine.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="older ablo that did not list its files"):
        RunFolder(out, "exp", cfg, data, overwrite=True).__enter__()
    assert (out / "mine.txt").read_text() == "mine" and (out / "summary.json").exists()
    (data / "train.bin").write_bytes(b"two")
    with pytest.raises(RunFolderError, match="the data differ"):
        RunFolder(out, "exp", cfg, data, resume=True).__enter__()
    (data / "train.bin").write_bytes(b"one")
    with RunFolder(out, "exp", cfg, data, resume=True):
        pass
    assert read_manifest(out)["ablo_run_folder"] == 1  # upgraded by the resume
