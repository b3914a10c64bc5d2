"""What ablo prints and writes carries no internal label: no file number of a paper in the
developers' shared folder ("paper 001") and no issue number ("issue 12"). Scanned: ``ablo --help``
and every subcommand's help, ``ablo list``, ``ablo config`` of every experiment, ``ablo run
EXPERIMENT --help``; what the runs of tests/test_readme_commands.py print and write is scanned
there (``labels_in_folder``), and the built documentation by tests/test_docs.py."""

import re
from pathlib import Path

import typer.main

from _cli_run import ablo
from ablo import cli
from ablo.experiments import EXPERIMENTS, get

LABELS = [r"\b[Pp]apers? 00\d", r"\b[Ii]ssues? #?\d", r"\(paper 0"]
SUBCOMMANDS = sorted(typer.main.get_command(cli.app).commands)


def labels_in(text: str) -> list:
    return [text[max(0, m.start() - 60):m.end() + 40] for p in LABELS for m in re.finditer(p, text)]


def test_the_patterns_catch_the_labels():
    assert labels_in("see paper 001, Table 2") and labels_in("(issue 12)") and labels_in("Papers 004 and 000")
    assert labels_in("Issue #7") and not labels_in("Likhosherstov et al. 2021, Table 1; 1000 issues; 0.001 paper")


def test_help_list_and_config_carry_no_label():
    outputs = {("--help",): None, ("list",): None}
    outputs.update({(sub, "--help"): None for sub in SUBCOMMANDS})
    get("toy2d")  # the registry is filled on first use
    outputs.update({("config", name): None for name in EXPERIMENTS})
    outputs.update({("run", name, "--help"): None for name in EXPERIMENTS})
    if "data" in SUBCOMMANDS:
        outputs[("data", "fetch", "--help")] = None
    hits = []
    for args in outputs:
        code, out, err = ablo(*args)
        assert code == 0, (args, err[-2000:])
        hits += [f"ablo {' '.join(args)}: {h!r}" for h in labels_in(out + err)]
    assert hits == [], "\n".join(hits)


def labels_in_folder(folder: Path) -> list:
    """Labels in the text files under ``folder`` (binary files, plots and checkpoints, skipped)."""
    hits = []
    for f in sorted(folder.rglob("*")):
        data = f.read_bytes() if f.is_file() else b"\0"
        if b"\0" not in data:
            hits += [f"{f.relative_to(folder)}: {h!r}" for h in labels_in(data.decode(errors="replace"))]
    return hits


def test_labels_in_folder_reads_text_files_only(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.md").write_text("as in paper 002")
    (tmp_path / "plot.png").write_bytes(b"\x89PNG\0 paper 001")
    assert [h.split(":")[0] for h in labels_in_folder(tmp_path)] == ["a/results.md"]
