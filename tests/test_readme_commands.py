"""Every ``ablo ...`` command that README.md and docs/*.md show runs and exits 0, in its cheapest
form: ``ablo run`` with ``--tiny`` (size keys the page sets are dropped where ``--tiny`` sets them,
seed lists cut to two seeds), ``ablo demo`` with a small call budget, ``ablo diagnose`` on few
samples, ``ablo bench --smoke``, every output folder a temporary one; what each prints and
writes carries no internal label (tests/test_no_internal_labels.py). Commands that read the real
datasets (``--data-dir``) use the shared data folder when it is there (``ABLO_SHARED_DATA``, else
``../shared/data`` beside the repository) and are skipped, saying so, when it is not;
``ablo data fetch`` downloads and is left to tests/test_fetch.py (a local server).

The README's two commands run in the default suite: ``ablo demo`` here, and the test suite's
collection (``python -m pytest --collect-only``) standing for ``python -m pytest``; so do ``list``,
``config``, ``diagnose``. The ``ablo run`` commands, ``bench`` and ``compare`` are marked ``slow``:
``python -m pytest -m slow tests/test_readme_commands.py`` (with the shared data present, that is
every command of the pages).
"""

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

import ablo
from _cli_run import ablo as run_ablo
from _shared_data import SHARED_DATA
from ablo.experiments import get
from test_no_internal_labels import labels_in, labels_in_folder

ROOT = Path(ablo.__file__).resolve().parents[2]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

#: Subcommands that say nothing runnable without more words (prose such as "each `ablo run`").
INCOMPLETE = {("run",), ("compare",), ("config",), ("data",), ("data", "fetch")}
#: Call budget of the demo's cheapest form (its default is 12,000 per method).
DEMO_CALLS = "200"


def page_commands(page: Path) -> list:
    """The ``ablo ...`` commands of a page: lines of its ```bash blocks and inline code spans."""
    text = page.read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("  #")[0].split("&&"):
                if part.strip().startswith("ablo "):
                    found.append(part.strip())
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if span.startswith("ablo "):
            found.append(span)
    out = []
    for command in found:
        words = shlex.split(command)[1:]
        if tuple(words) in INCOMPLETE or any(re.fullmatch(r"[A-Z][A-Z_]*(\[.*|\.\.\.)?|\.\.\.", w) for w in words):
            continue  # a fragment or a template (EXPERIMENT, NAME, DIR, ...), not a command
        out.append(command)
    return out


def all_commands() -> list:
    """(page, command) over the pages, each command once (its output folder aside)."""
    seen, out = set(), []
    for page in PAGES:
        for command in page_commands(page):
            key = re.sub(r" --out \S+", "", command)
            if key not in seen:
                seen.add(key)
                out.append((page.name, command))
    return out


def test_commands_are_found():
    commands = [c for _, c in all_commands()]
    assert "ablo demo --out runs/demo" in commands
    assert any(c.startswith("ablo run hypercleaning") for c in commands)
    assert any(c.startswith("ablo compare") for c in commands)
    assert page_commands_text("`ablo run` and `ablo run EXPERIMENT --help`, `ablo list`") == ["ablo list"]


def page_commands_text(text: str) -> list:
    """``page_commands`` of a text (for the test above)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "page.md"
        page.write_text(text)
        return page_commands(page)


# --- the cheapest form ----------------------------------------------------------------------------
def _smaller(given: str, tiny) -> bool:
    """Whether the page's value ``given`` is no larger than --tiny's (then it is kept)."""
    try:
        return isinstance(tiny, (int, float)) and not isinstance(tiny, bool) and float(given) <= tiny
    except ValueError:
        return False


def cheap_run(words: list, out_of) -> list:
    """``ablo run EXP ...`` in its cheapest form (see the module docstring)."""
    exp = get(words[2])
    keys = {f.name for f in dataclasses.fields(exp.config)}
    tiny = dict(exp.tiny)
    size_keys = set(tiny) - {"methods", "smoke", "seeds"}
    option_key = {"--budget-calls": "budget_calls", "--steps": "outer_steps"}
    out, rest = words[:3] + ["--tiny"], words[3:]
    while rest:
        word = rest.pop(0)
        if word == "--tiny":
            continue
        if word in ("--out", "--data-dir", "--seeds", "--set", "--seed", "--method", "-m", "--devices",
                    "--budget-calls", "--steps") or (word.startswith("--") and "=" not in word and rest
                                                     and not rest[0].startswith("-")):
            value = rest.pop(0)
        elif word.startswith("--") and "=" in word:
            word, value = word.split("=", 1)
        else:
            out.append(word)  # a flag: --resume, --overwrite
            continue
        if word == "--out":
            value = str(out_of(value))
        elif word == "--data-dir" and value != "none":
            if not SHARED_DATA.is_dir():
                pytest.skip(f"needs the real datasets: {SHARED_DATA} is absent (set ABLO_SHARED_DATA)")
            value = str(SHARED_DATA)
        elif word == "--seeds":
            value = ",".join(value.split(",")[:2])
        key = {"--set": value.split("=", 1)[0]}.get(word, option_key.get(word, word[2:].replace("-", "_")))
        if word == "--set" and key == "seeds":
            value = "seeds=" + ",".join(value.split("=", 1)[1].split(",")[:2])
        elif key in size_keys and key in keys and not _smaller(value.split("=", 1)[-1], tiny[key]):
            continue  # --tiny's smaller size applies
        out += [word, value]
    if "--out" not in out:
        out += ["--out", str(out_of(f"runs/{words[2]}"))]
    return out


def cheap(command: str, out_of) -> list:
    """The command's arguments (after ``ablo``) in their cheapest form."""
    words = shlex.split(command)
    sub = words[1]
    if sub == "run":
        words = cheap_run(words, out_of)
    elif sub == "data":
        pytest.skip("ablo data fetch downloads; tests/test_fetch.py runs it against a local server")
    elif sub in ("demo", "bench"):
        options = dict(zip(words[2::2], words[3::2]))
        options["--out"] = str(out_of(options.get("--out", f"runs/{sub}")))
        words = words[:2] + [w for kv in options.items() for w in kv]
        words += ["--budget-calls", DEMO_CALLS] if sub == "demo" and "--budget-calls" not in options else []
        words += ["--smoke"] if sub == "bench" else []
    elif sub == "diagnose":
        words = words + ["--samples", "2", "--steps", "5"]
    elif sub == "compare":
        words = words[:2] + [str(out_of(w, written=True)) for w in words[2:]]
    return words[1:]


def is_slow(command: str) -> bool:
    """The runs besides the README's demo (the experiments' own tests run each --tiny config in
    the default suite), the benchmark and compare (which runs the commands above it): ``-m slow``."""
    return shlex.split(command)[1] in ("run", "bench", "compare")


COMMANDS = all_commands()


@pytest.mark.parametrize("page, command", [pytest.param(p, c, marks=[pytest.mark.slow] if is_slow(c) else [],
                                                        id=f"{p}:{c[:70]}") for p, c in COMMANDS])
def test_command_exits_0(page, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders = {}

    def out_of(folder: str, written: bool = False) -> Path:
        """The temporary folder standing for the page's ``folder``; with ``written``, one that the
        commands above ``command`` on its page write (run here first)."""
        if written:
            return prepare(folder)
        folders[folder] = tmp_path / "out" / folder.strip("/").replace("~", "home")
        return folders[folder]

    def prepare(folder: str) -> Path:
        if folder not in folders:
            for earlier in page_commands(ROOT / page if page == "README.md" else ROOT / "docs" / page):
                if earlier == command:
                    break
                words = shlex.split(earlier)
                writes = words[words.index("--out") + 1] if "--out" in words else (
                    f"runs/{words[2]}" if words[1] == "run" else None)
                if writes == folder:
                    check(earlier, cheap(earlier, out_of))
        assert folder in folders, f"`{command}` names {folder}, which no command above it writes"
        return folders[folder]

    check(command, cheap(command, out_of))


def check(command: str, args: list) -> None:
    """``ablo ARGS`` exits 0, and neither what it prints nor the files of its --out folder carry an
    internal label."""
    code, out, err = run_ablo(*args)
    assert code == 0, f"`{command}` (run as `ablo {shlex.join(args)}`) exits with {code}:\n{err[-3000:]}"
    hits = labels_in(out + err)
    if "--out" in args and Path(args[args.index("--out") + 1]).is_dir():
        hits += labels_in_folder(Path(args[args.index("--out") + 1]))
    assert hits == [], f"`{command}` prints or writes internal labels: {hits}"


def test_the_test_suite_collects(request):
    """``python -m pytest`` (the README's second command) in its cheapest form: the suite's
    configuration (addopts, markers) loads and every test module is collected. In this process (a
    second interpreter would spend its time importing JAX and the test modules again), with the
    configuration file's options; it collects at least what this run collected."""

    class Count:
        items = None

        def pytest_collection_finish(self, session):
            Count.items = len(session.items)

    code = pytest.main(["--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                        "-c", str(ROOT / "pyproject.toml"), str(ROOT / "tests")], plugins=[Count()])
    assert code == 0 and Count.items, f"collection exited {code} with {Count.items} tests"
    assert Count.items >= len(request.session.items) > 0
