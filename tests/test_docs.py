"""The API reference: every public module, class, function and method has a docstring, and the
MkDocs site (mkdocs.yml, docs/api/*.md, mkdocstrings) builds with warnings as errors."""

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

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


def test_api_reference_builds_with_warnings_as_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    page = (tmp_path / "site" / "api" / "estimators" / "index.html").read_text()
    assert "UFOM" in page and "hypergradient" in page.lower()
