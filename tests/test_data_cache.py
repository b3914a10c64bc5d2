"""``data_dir`` defaults to the ``ablo data fetch`` cache: a run that does not set it reads its
experiment's dataset from the cache when it was fetched there, records the folder in its config
and manifest, and otherwise (nothing fetched, a partial fetch, ``none``, a smoke run, the demo)
reads the built-in data as before."""

import json
from dataclasses import dataclass
from typing import Optional

import pytest

from ablo import cli
from ablo.data import fetch as fetch_mod
from ablo.experiments import Experiment, execute, get
from ablo.config import ConfigError, ExperimentConfig, option
from test_cli import call

#: experiment -> the dataset its data_dir is for.
READS = {"hypercleaning": "mnist", "stochastic-hypercleaning": "mnist", "fewshot": "omniglot",
         "hyper-representation": "omniglot", "newsgroups": "20newsgroups", "task-interaction": "20newsgroups"}


def fake_fetch(root, dataset, names=None):
    """Files named as ``ablo data fetch DATASET`` writes them (empty: only names are checked)."""
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for name in names if names is not None else [r.name for r in fetch_mod.SOURCES[dataset]]:
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("ABLO_DATA_DIR", str(root))
    return root


def test_each_data_experiment_declares_its_dataset():
    for name, dataset in READS.items():
        assert get(name).config.DATASET == dataset, name
    for name in ("toy2d", "counterexample", "demo", "synthetic-q"):
        assert get(name).config.DATASET is None, name


def test_default_reads_the_fetched_dataset(cache):
    for dataset in ("mnist", "omniglot", "20newsgroups"):
        fake_fetch(cache, dataset)
    for name, dataset in READS.items():
        assert get(name).make_config().data_dir == str(cache / dataset), name


def test_without_a_fetch_the_builtin_data_is_used(cache):
    for name in READS:
        assert get(name).make_config().data_dir is None, name
    fake_fetch(cache, "mnist", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])  # a partial fetch
    assert fetch_mod.cached("mnist") is None
    assert get("hypercleaning").make_config().data_dir is None


def test_none_smoke_runs_and_the_demo_refuse_the_cache(cache):
    mnist = fake_fetch(cache, "mnist")
    exp = get("hypercleaning")
    assert exp.make_config({"data_dir": "none"}).data_dir is None
    assert exp.make_config({"data_dir": None}).data_dir is None
    assert exp.make_config(tiny=True).data_dir is None  # smoke sizes are for the built-in digits
    assert exp.make_config({"data_dir": str(cache)}).data_dir == str(cache)  # an explicit folder wins
    assert get("demo").make_config().data_dir is None  # the no-download demo
    assert get("demo").make_config({"data_dir": str(mnist)}).data_dir == str(mnist)


def test_omniglot_decoded_npz_stands_for_its_zip(cache):
    fake_fetch(cache, "omniglot", ["images_background.npz", "images_evaluation.zip"])
    assert fetch_mod.cached("omniglot") == cache / "omniglot"
    assert fetch_mod.cached("omniglot", cache / "elsewhere") is None
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        fetch_mod.cached("cifar")


def test_a_key_unused_with_the_cached_data_says_why(cache):
    fake_fetch(cache, "mnist")
    with pytest.raises(ConfigError, match=r"digits_train is not used.*defaults to the fetched mnist.*data_dir=none"):
        get("stochastic-hypercleaning").make_config({"digits_train": "100"})
    assert get("stochastic-hypercleaning").make_config({"digits_train": "100", "data_dir": "none"}).digits_train == 100


@dataclass(frozen=True)
class _Config(ExperimentConfig):
    DATASET = "mnist"
    data_dir: Optional[str] = option(None, "MNIST folder")


def test_manifest_and_summary_record_the_cache_folder(cache, tmp_path):
    mnist = fake_fetch(cache, "mnist")
    exp = Experiment("cache-probe", lambda cfg, ctx: {"config": cfg.as_dict()}, _Config)
    cfg = exp.make_config()
    summary = execute(exp, cfg, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert summary["config"]["data_dir"] == str(mnist)
    assert manifest["config"]["data_dir"] == str(mnist)
    assert manifest["data"]["path"] == str(mnist.resolve()) and manifest["data"]["files"] == 4


def test_cli_says_it_reads_the_cache_and_none_refuses_it(cache, tmp_path, monkeypatch, capsys):
    mnist = fake_fetch(cache, "mnist")
    seen = []
    monkeypatch.setattr(cli, "run_experiment", lambda exp, cfg, out, resume, overwrite: seen.append(cfg))
    code, _, err = call(["run", "hypercleaning", "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert seen.pop().data_dir == str(mnist) and f"reading mnist from the data cache {mnist}" in err
    for args in (["--data-dir", "none"], ["--set", "data_dir=none"], ["--tiny"]):
        code, _, err = call(["run", "hypercleaning", "--out", str(tmp_path / "b"), *args], capsys)
        assert code == 0, err
        assert seen.pop().data_dir is None and "data cache" not in err, args
    code, _, err = call(["run", "hypercleaning", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path)],
                        capsys)
    assert code == 2 and "does not exist" in err
    code, out, _ = call(["config", "hypercleaning"], capsys)
    assert "the fetched mnist" in out
