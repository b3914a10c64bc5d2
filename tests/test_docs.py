"""The API reference: every public module, class, function and method has a docstring; the
MkDocs site (mkdocs.yml, docs/api/*.md, mkdocstrings) builds with warnings as errors, a broken link
fails that build, every page is in the nav, every name of ``ablo.__all__`` has an entry with its
parameters on the API reference's first page (``solve`` first), and the built site carries no
internal label."""

import html
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ablo

ROOT = Path(ablo.__file__).resolve().parents[2]

#: Modules whose public names form the API (the command line, benchmark harness and experiments are
#: documented by their --help and docs/ pages instead).
MODULES = ["ablo", "ablo.api", "ablo.problem", "ablo.inner", "ablo.outer", "ablo.theory", "ablo.cost", "ablo.checkpoint",
           "ablo.sharding", "ablo.linear_solvers", "ablo.diagnose", "ablo.meta", "ablo.results", "ablo.models",
           "ablo.curvature", "ablo.atomic", "ablo.problems", "ablo.problems.hypercleaning", "ablo.estimators",
           "ablo.data"]
MODULES += [f"ablo.estimators.{m.name}" for m in pkgutil.iter_modules(ablo.estimators.__path__)]
MODULES += [f"ablo.data.{m.name}" for m in pkgutil.iter_modules(importlib.import_module("ablo.data").__path__)
            if not m.name.startswith("_")]

# Symbols in modules being rewritten on other branches right now (estimators, api, inner, problem,
# outer, theory). Their docstrings come with those rewrites; the lead empties this list after merging
# them. Nothing outside those modules may be listed here.
NOT_YET_DOCUMENTED: set = set()
REWRITTEN_ELSEWHERE = ("ablo.estimators.", "ablo.api.", "ablo.inner.", "ablo.problem.", "ablo.outer.", "ablo.theory.")


def _own_doc(obj) -> str:
    """The docstring written for ``obj``: not inherited by a class, not the one namedtuple and
    dataclass generate ("Name(field, ...)")."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else inspect.getdoc(obj)
    doc = (doc or "").strip()
    return "" if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(") else doc


def _public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, o in vars(module).items() if not n.startswith("_")
                 and (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == module.__name__]
    return names


def public_api():
    """{qualified name: object} for every public module, class, function and class method."""
    out = {}
    for name in MODULES:
        module = importlib.import_module(name)
        out[name] = module
        for n in _public_names(module):
            obj = getattr(module, n)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue  # submodules are listed in MODULES; constants are documented by their module
            out[f"{obj.__module__}.{obj.__qualname__}"] = obj
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    if not attr.startswith("_") and inspect.isfunction(func):
                        out[f"{obj.__module__}.{obj.__qualname__}.{attr}"] = getattr(obj, attr)
    return out


def test_the_public_api_is_found():
    api = public_api()
    for name in ("ablo.api.hypergradient", "ablo.cost.Cost", "ablo.estimators.debiased.UFOM", "ablo.outer.run",
                 "ablo.theory.q_star", "ablo.data.fetch.fetch", "ablo.inner.gd"):
        assert any(k == name or k.endswith("." + name.rsplit(".", 1)[1]) for k in api), name
    assert len(api) > 100


def test_every_public_symbol_has_a_docstring():
    api = public_api()
    missing = sorted(name for name, obj in api.items() if not _own_doc(obj))
    assert [m for m in missing if m not in NOT_YET_DOCUMENTED] == [], "public symbols without a docstring"
    # the allow-list only shrinks: no stale entries, and only modules being rewritten elsewhere
    assert sorted(NOT_YET_DOCUMENTED - set(missing)) == [], "documented now: remove from NOT_YET_DOCUMENTED"
    assert all(m.startswith(REWRITTEN_ELSEWHERE) for m in NOT_YET_DOCUMENTED)


def test_own_doc_sees_generated_and_inherited_docstrings():
    from typing import NamedTuple

    class Bare(NamedTuple):
        x: int

    class Base:
        """Documented."""

    class Child(Base):  # inherits a docstring, has none of its own
        pass

    assert _own_doc(Bare) == "" and _own_doc(Child) == "" and _own_doc(ablo.cost.Cost)


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as `mkdocs build --strict` builds it from mkdocs.yml (once for this module)."""
    out = tmp_path_factory.mktemp("site")
    result = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_api_reference_builds_with_warnings_as_errors(site):
    page = (site / "api" / "estimators" / "index.html").read_text()
    assert "UFOM" in page and "hypergradient" in page.lower()


def _load_mkdocs_yml() -> dict:
    # mkdocs.yml may hold python tags (none today): read it as plain YAML, tags ignored
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=loader)


def test_a_broken_link_fails_the_docs_build(tmp_path):
    """mkdocs.yml's strict and validation settings, on a one-page site: the page builds, and the same
    page with a link to a missing page and one to a missing anchor does not, naming both."""
    config = _load_mkdocs_yml()
    docs = tmp_path / "docs"
    docs.mkdir()
    small = {"site_name": "t", "docs_dir": str(docs), "strict": config["strict"], "validation": config["validation"]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(small))
    (docs / "index.md").write_text("# Title\n\nA [good link](#title).\n")
    assert mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site").returncode == 0
    (docs / "index.md").write_text("# Title\n\nA [page that is not there](missing.md), [an anchor](#nowhere).\n")
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and "missing.md" in result.stderr and "nowhere" in result.stderr, result.stderr[-2000:]


def test_every_page_is_in_the_nav():
    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from (pages(value) if isinstance(value, list) else [value])

    listed = set(pages(_load_mkdocs_yml()["nav"]))
    docs = ROOT / "docs"
    found = {str(p.relative_to(docs)) for p in docs.rglob("*.md") if p.relative_to(docs).parts[0] != "results"}
    assert found <= listed, f"pages missing from mkdocs.yml's nav: {sorted(found - listed)}"
    assert listed <= found, f"nav entries without a page: {sorted(listed - found)}"


def _entries(page: str) -> dict:
    """{heading id: the HTML up to the next heading of the same or a higher level} of a built page,
    for the h3 headings that carry an ``ablo.`` id, in page order."""
    heads = list(re.finditer(r'<h([23]) id="(ablo\.[^"]+)"', page))
    ends = [m.start() for m in re.finditer(r"<h[23][ >]", page)] + [len(page)]
    out = {}
    for m in heads:
        if m.group(1) == "3":
            out[m.group(2)] = page[m.start():next(e for e in ends if e > m.start())]
    return out


def _section_names(entry: str, title: str) -> set:
    """The names listed in the entry's "Parameters:" (or other) section table."""
    i = entry.find(f'<span class="doc-section-title">{title}:</span>')
    if i < 0:
        return set()
    table = entry[i:entry.index("</table>", i)]
    return {html.unescape(n) for n in re.findall(r'<tr class="doc-section-item">\s*<td>\s*<code>(?:<span[^>]*>)?([^<]+)<', table)}


#: The main entry points: their entries show an example.
WITH_EXAMPLE = {"solve", "hypergradient", "BilevelProblem", "Reverse", "Recompute", "Checkpointed", "Binomial", "Forward",
                "Truncated", "FOM", "UFOM", "AdaptiveUFOM", "Debiased", "AID", "HOAG", "StocBiO", "BSA", "TTSA", "Reptile",
                "gd", "Budget"}


def test_every_exported_name_has_an_entry_with_its_parameters_solve_first(site):
    """The API reference's first page has an entry for every name of ``ablo.__all__``, ``solve``
    first; a callable's entry lists every parameter of its signature under "Parameters:"
    ("Attributes:" for a NamedTuple's fields), a function's says what it returns, and the main
    entry points show an example."""
    entries = _entries((site / "api" / "index.html").read_text())
    assert list(entries)[0] == "ablo.solve", f"the first entry is {list(entries)[0]}, not ablo.solve"
    missing = [n for n in ablo.__all__ if f"ablo.{n}" not in entries]
    assert missing == [], f"names of ablo.__all__ without an entry in docs/api/index.md: {missing}"
    problems = []
    for name in ablo.__all__:
        obj, entry = getattr(ablo, name), entries[f"ablo.{name}"]
        if inspect.ismodule(obj) or not callable(obj):
            assert re.search(r"<p>.+</p>", entry, re.S), f"ablo.{name}: an entry without text"
            continue
        try:
            params = [p.name for p in inspect.signature(obj).parameters.values()
                      if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        except ValueError:  # builtin signatures (exceptions): nothing of their own to document
            params = []
        is_namedtuple = inspect.isclass(obj) and issubclass(obj, tuple)
        listed = _section_names(entry, "Attributes" if is_namedtuple else "Parameters")
        if set(params) - listed:
            problems.append(f"ablo.{name}: parameters not documented: {sorted(set(params) - listed)}")
        if inspect.isfunction(obj) and '<span class="doc-section-title">Returns:</span>' not in entry:
            problems.append(f"ablo.{name}: no Returns section")
        if name in WITH_EXAMPLE and '<details class="example"' not in entry:
            problems.append(f"ablo.{name}: no example")
        if not re.search(r"<p>.+</p>", entry, re.S):
            problems.append(f"ablo.{name}: no description")
    assert problems == [], "\n".join(problems)


#: Internal labels no reader should see: the shared folder's file numbers of the papers, issue
#: numbers, and (outside the copied result folders, which the runs wrote) machine paths.
LABELS = [r"\b[Pp]apers? 00\d", r"\b[Ii]ssues? #?\d", r"\(paper 0", r"SPEC\b"]
MACHINE_PATHS = [r"/work/", r"\.\./shared", r"/root/", r"/home/\w"]


def test_the_built_site_carries_no_internal_label(site):
    hits = []
    for page in sorted(site.rglob("*.html")) + sorted(site.rglob("*.json")):
        text = page.read_text(errors="replace")
        rel = page.relative_to(site)
        patterns = LABELS + (MACHINE_PATHS if rel.parts[0] not in ("results", "search") else [])
        for pattern in patterns:
            for hit in re.finditer(pattern, text):
                hits.append(f"{rel}: {text[max(0, hit.start() - 60):hit.end() + 40]!r}")
    assert hits == [], "\n".join(hits[:20])
