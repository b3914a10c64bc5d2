"""Estimators by name: the registry and the one grammar that parses an estimator spec.

A spec is ``NAME`` or ``NAME:key=value,key=value`` (e.g. ``truncated:K=5``,
``ufom:q=0.2,exact=checkpointed``); ``NAME-<number>`` is shorthand for the estimator's main
option (``truncated-5`` = ``truncated:K=5``, ``ufom-0.2`` = ``ufom:q=0.2``) where the
registration names one. Values are typed by the option's declared type: an integer option
refuses ``5.5``, a boolean takes only true/false, an estimator-valued option (``exact``,
``cheap``) takes a registered name. :func:`parse` builds the estimator, so its own checks run
too; every error is a ValueError naming the spec, the option and what is allowed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from typing import Callable, Dict, NamedTuple, Optional

from .base import Estimator


class Entry(NamedTuple):
    """A registered estimator: its factory, a one-line summary and the option its shorthand
    ``NAME-<number>`` sets (None: no shorthand)."""

    factory: Callable[..., Estimator]
    summary: str
    shorthand: Optional[str]


REGISTRY: Dict[str, Entry] = {}

_INT = re.compile(r"[+-]?\d+")
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def register(name: str, factory: Callable[..., Estimator], summary: str, shorthand: Optional[str] = None) -> None:
    """Make ``factory(**options)`` selectable as ``name`` in specs; ``shorthand`` is the option that
    ``name-<number>`` sets."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"estimator names are lower-case words joined by '-'; got {name!r}")
    REGISTRY[name] = Entry(factory, summary, shorthand)


def names() -> list:
    """The registered names, sorted."""
    return sorted(REGISTRY)


def _options(factory) -> Dict[str, object]:
    """{option: declared type or annotation string} of a factory (a dataclass or a function)."""
    params = inspect.signature(factory).parameters
    out = {}
    hints = {}
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - string annotations that do not resolve: fall back to the text
        pass
    for p in params.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[p.name] = hints.get(p.name, p.annotation if p.annotation is not p.empty else type(p.default))
    return out


def _kind(annotation) -> str:
    """'int', 'float', 'bool', 'estimator', 'str' or 'any' for an option's annotation."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = str(annotation) if text in ("Optional", "Union") else text
    for kind in ("bool", "int", "float"):
        if re.search(rf"\b{kind}\b", text):
            return kind
    if "Estimator" in text or "ExactUnrolled" in text:
        return "estimator"
    if re.search(r"\bstr\b", text):
        return "str"
    return "any"


def _value(spec: str, option: str, kind: str, text: str):
    """The typed value of ``option=text``."""
    def bad(allowed):
        return ValueError(f"estimator {spec!r}: option {option} must be {allowed}; got {text!r}")

    low = text.lower()
    if low in ("none", "null") and kind != "bool":
        return None
    if kind == "bool":
        if low not in ("true", "false"):
            raise bad("true or false")
        return low == "true"
    if kind == "int":
        if not _INT.fullmatch(text):
            raise bad("an integer")
        return int(text)
    if kind == "float":
        try:
            v = float(text)
        except ValueError:
            raise bad("a number") from None
        if not math.isfinite(v):
            raise bad("a finite number")
        return v
    if kind == "estimator":
        if text not in REGISTRY:
            raise bad(f"a registered estimator name ({', '.join(names())})")
        return REGISTRY[text].factory()
    if kind == "any":  # untyped (**options): numbers as numbers, names as strings
        if _INT.fullmatch(text):
            return int(text)
        try:
            v = float(text)
            if not math.isfinite(v):
                raise bad("a finite number")
            return v
        except ValueError:
            return {"true": True, "false": False}.get(low, text)
    return text


def split(spec: str) -> tuple:
    """(name, {option: text}) of a spec, shorthand expanded; no typing yet."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an estimator spec is NAME or NAME:key=value,...; got {spec!r}")
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    raw: Dict[str, str] = {}
    if name not in REGISTRY:
        base, dash, number = name.rpartition("-")
        entry = REGISTRY.get(base)
        if dash and entry is not None and re.fullmatch(r"[0-9.eE+-]+", number):
            if entry.shorthand is None:
                raise ValueError(f"estimator {spec!r}: {base} takes no shorthand value; write {base}:key=value "
                                 f"with keys {', '.join(_options(entry.factory)) or '(none)'}")
            name, raw[entry.shorthand] = base, number
        else:
            raise ValueError(f"unknown estimator {name!r}; choose one of: {', '.join(names())} "
                             "(spec: NAME or NAME:key=value,...)")
    if rest:
        for item in rest.split(","):
            key, eq, text = item.partition("=")
            key = key.strip()
            if not eq or not key or not text.strip():
                raise ValueError(f"estimator {spec!r}: options are key=value pairs separated by commas; got {item!r}")
            if key in raw:
                raise ValueError(f"estimator {spec!r}: option {key} given twice")
            raw[key] = text.strip()
    return name, raw


def parse(spec: str) -> Estimator:
    """The estimator a spec names, built (so its own validation runs)."""
    name, raw = split(spec)
    entry = REGISTRY[name]
    declared = _options(entry.factory)
    open_ended = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values())
    options = {}
    for key, text in raw.items():
        if key not in declared and not open_ended:
            raise ValueError(f"estimator {spec!r}: {name} has no option {key!r}; its options: "
                             f"{', '.join(declared) or '(none)'}")
        options[key] = _value(spec, key, _kind(declared.get(key, "any")), text)
    try:
        return entry.factory(**options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"estimator {spec!r}: {e}") from None


def get(name: str, **options) -> Estimator:
    """The estimator registered as ``name`` built with Python ``options`` (no string parsing)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown estimator {name!r}; choose one of: {', '.join(names())}")
    return REGISTRY[name].factory(**options)


def spec_of(est: Estimator) -> str:
    """A canonical spec string of a built estimator: its name and the options that differ from
    the defaults (nested estimators by their spec), e.g. ``truncated:K=5``."""
    name = est.name
    if not dataclasses.is_dataclass(est):
        return name
    parts = []
    for f in dataclasses.fields(est):
        if not f.init:
            continue
        v = getattr(est, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if v == default:
            continue
        parts.append(f"{f.name}={spec_of(v) if isinstance(v, Estimator) else v}")
    return name + (":" + ",".join(parts) if parts else "")
