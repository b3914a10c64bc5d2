"""Typed experiment configs: one frozen dataclass per experiment, every field declared with its
type, range and a one-line help, and one strict parser for what users type. App layer, beside
:mod:`ablo.runfolder` and :mod:`ablo.results`: the CLI, the run folder and the experiments read
it; the core never imports it (the import-linter contract in pyproject.toml).

    @dataclass(frozen=True)
    class Config(ExperimentConfig):
        steps: int = option(100, "inner steps r", low=1)
        inner_lr: float = option(1.0, "inner GD step size α", low=0, low_open=True)
        methods: tuple[str, ...] = option(("fom",), "estimator specs", estimators=True, min_len=1)

:func:`build` makes a config from the experiment's defaults, its ``TINY`` overrides and the
user's ``key → text`` overrides. Nothing is coerced or replaced: an integer field refuses
``1.5``, a boolean takes true/false only, numbers must be finite and in range, a list takes
``a,b,c`` or ``[a, b, c]``; unknown keys and keys the experiment would not use with the other
values given (:meth:`ExperimentConfig.inactive`) are refused. Every error is a
:class:`ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import typing
from typing import Any, ClassVar, Dict, Mapping, Optional

_INT = re.compile(r"[+-]?\d+")


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key and what is allowed."""


def option(default, help: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
           choices=None, min_len: int = 0, unique: bool = False, estimators: bool = False, hashed: bool = True,
           none_word: Optional[str] = None, named: Optional[Mapping[str, Any]] = None):
    """A config field: ``default``, a one-line ``help``, numeric bounds (for a list: of each item),
    allowed ``choices``, the least list length ``min_len``, ``unique`` list items, ``estimators`` for estimator specs
    (checked by building them), ``hashed=False`` for fields that do not change results (e.g. the
    number of devices), which resume may change; ``none_word`` another word for None in an optional
    field (e.g. "auto" when None means "chosen by the experiment"); ``named`` {word: value} for
    named settings (e.g. {"paper": 1.0}: the paper's value, typed as the word)."""
    meta = dict(help=help, low=low, high=high, low_open=low_open, high_open=high_open, choices=choices,
                min_len=min_len, unique=unique or estimators, estimators=estimators, hashed=hashed,
                none_word=none_word, named=dict(named or {}))
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Base of every experiment's config. Subclasses declare fields with :func:`option` and may
    override :meth:`validate` (relations between fields) and :meth:`inactive`. A config with a
    ``data_dir`` field names the dataset it reads in :attr:`DATASET`."""

    #: The ``ablo data fetch`` dataset ("mnist", "omniglot", "20newsgroups") that ``data_dir`` is
    #: for: a run that does not set data_dir reads it from the fetch cache when it is there (see
    #: :func:`build`). None: the experiment reads no fetched data.
    DATASET: ClassVar[Optional[str]] = None

    #: Pre-registration: the seeds this experiment's settings were chosen on. The seeds a run
    #: reports must be others (:func:`check` refuses an overlap), so a claim is never read off the
    #: seeds it was tuned on; summary.json records both.
    tuned_seeds: tuple[int, ...] = option((), "seeds the settings were chosen on (pre-registration); the seeds "
                                          "a run reports must differ from them", low=0, unique=True)

    def reported_seeds(self) -> tuple:
        """The seeds this run reports (``seeds``, or ``seed`` for one-seed experiments)."""
        if hasattr(self, "seeds"):
            return tuple(self.seeds or ())
        return (self.seed,) if getattr(self, "seed", None) is not None else ()

    def validate(self) -> None:
        """Raise ConfigError when fields do not fit together (called after each field is checked)."""

    def inactive(self) -> Dict[str, str]:
        """{key: why} for keys that this config would not use (e.g. ``hidden`` with a linear model);
        setting one of them explicitly is an error."""
        return {}

    # -- helpers for subclasses and callers ----------------------------------------------------
    def as_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def hashed_dict(self) -> dict:
        """The fields that determine results (resume must not change them)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("hashed", True)}

    def digest(self) -> str:
        """SHA-256 of :meth:`hashed_dict` as canonical JSON."""
        return hashlib.sha256(json.dumps(self.hashed_dict(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def help_lines(cls) -> list:
        """``key (type, default): help`` for each field."""
        hints = typing.get_type_hints(cls)
        return [f"{f.name} ({_type_name(hints[f.name])}, default {_plain(f.default)!r}): {f.metadata.get('help', '')}"
                for f in dataclasses.fields(cls)]


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _type_name(t) -> str:
    inner, optional, seq = _unwrap(t)
    name = getattr(inner, "__name__", str(inner))
    name = f"list of {name}" if seq else name
    return f"{name} or none" if optional else name


def _unwrap(t):
    """(item type, optional?, sequence?) of an annotation like Optional[tuple[int, ...]]."""
    optional = False
    if typing.get_origin(t) is typing.Union or type(t).__name__ == "UnionType":
        args = [a for a in typing.get_args(t) if a is not type(None)]
        optional, t = True, args[0]
    if typing.get_origin(t) in (tuple, list):
        return typing.get_args(t)[0], optional, True
    return t, optional, False


def _scalar(key: str, typ, text, allowed: str):
    """One value of type ``typ`` from a string (CLI) or a Python value (TINY, API)."""
    def bad(what):
        return ConfigError(f"{key}: expected {what}; got {text!r}")

    if typ is bool:
        if isinstance(text, bool):
            return text
        if isinstance(text, str) and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise bad("true or false")
    if typ is int:
        if isinstance(text, bool):
            raise bad("an integer")
        if isinstance(text, int):
            return text
        if isinstance(text, str) and _INT.fullmatch(text.strip()):
            return int(text)
        raise bad("an integer")
    if typ is float:
        if isinstance(text, bool):
            raise bad("a number")
        try:
            v = float(text)
        except (TypeError, ValueError, OverflowError):
            raise bad("a number") from None
        if not math.isfinite(v):
            raise bad("a finite number")
        return v
    if typ is str:
        if not isinstance(text, str) or not text:
            raise bad("a non-empty string")
        return text
    raise TypeError(f"unsupported config field type {typ!r} for {key}")


def _split_list(text: str) -> list:
    t = text.strip()
    if t.startswith("["):
        if not t.endswith("]"):
            raise ValueError
        t = t[1:-1]
    return [] if not t.strip() else [x.strip().strip("'\"") for x in t.split(",")]


def parse_value(cls, key: str, value) -> Any:
    """The typed value of ``key`` from user text (or a Python value), without range checks."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}")
    typ, optional, seq = _unwrap(typing.get_type_hints(cls)[key])
    nones = ("none", "null") + ((fields[key].metadata["none_word"],) if fields[key].metadata.get("none_word") else ())
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in nones)):
        return None
    named = fields[key].metadata.get("named") or {}
    if isinstance(value, str) and value.strip().lower() in named:
        return named[value.strip().lower()]
    if not seq:
        if isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(typ)}, one value; got {value!r}")
        if isinstance(value, str) and value.strip().startswith("["):
            raise ConfigError(f"{key}: expected {_type_name(typ)}, one value; got {value!r}")
        return _scalar(key, typ, value, "")
    if isinstance(value, str):
        try:
            items = _split_list(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a list like a,b,c or [a, b, c]; got {value!r}") from None
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    return tuple(_scalar(key, typ, x, "") for x in items)


def _check_range(key: str, v, meta: Mapping) -> None:
    low, high = meta.get("low"), meta.get("high")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        too_low = low is not None and (v <= low if meta.get("low_open") else v < low)
        too_high = high is not None and (v >= high if meta.get("high_open") else v > high)
        if too_low or too_high:
            lo = "" if low is None else f"{'>' if meta.get('low_open') else '>='} {low}"
            hi = "" if high is None else f"{'<' if meta.get('high_open') else '<='} {high}"
            raise ConfigError(f"{key}: {v!r} is out of range; allowed: {' and '.join(x for x in (lo, hi) if x)}")
    choices = meta.get("choices")
    if choices is not None and v not in choices:
        raise ConfigError(f"{key}: {v!r} is not allowed; choose one of {', '.join(map(str, choices))}")


def check(cfg: ExperimentConfig, explicit=()) -> ExperimentConfig:
    """Check every field of ``cfg`` (types, ranges, choices, list lengths, estimator specs), then
    its :meth:`~ExperimentConfig.validate`, then refuse ``explicit`` keys that it would not use."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v, meta = getattr(cfg, f.name), f.metadata
        typ, optional, seq = _unwrap(hints[f.name])
        if v is None:
            if not optional:
                raise ConfigError(f"{f.name}: a value is required")
            continue
        for item in (v if seq else (v,)):
            _check_range(f.name, item, meta)
        if seq:
            if len(v) < meta.get("min_len", 0):
                raise ConfigError(f"{f.name}: give at least {meta['min_len']} value(s); got {list(v)!r}")
            if meta.get("unique") and len(set(v)) != len(v):
                raise ConfigError(f"{f.name}: values repeat in {list(v)!r}")
        if meta.get("estimators"):
            for spec in v:
                try:
                    estimator(spec)
                except ValueError as e:
                    raise ConfigError(f"{f.name}: {e}") from None
    cfg.validate()
    both = sorted(set(cfg.tuned_seeds) & set(cfg.reported_seeds()))
    if both:
        raise ConfigError(f"seeds: {both} are among tuned_seeds {list(cfg.tuned_seeds)}, the seeds the settings "
                          "were chosen on; report other seeds (or set tuned_seeds to the seeds you tuned on)")
    inactive = cfg.inactive()
    for key in explicit:
        if key in inactive:
            raise ConfigError(f"{key} is not used here: {inactive[key]}")
    return cfg


@functools.lru_cache(maxsize=None)
def estimator(spec: str):
    """The estimator of the spec ``spec`` (:func:`ablo.estimators.parse`), parsed once per process:
    estimators are immutable values, so the config check, the run, the labels and the sort keys
    share one."""
    from . import estimators

    return estimators.parse(spec)


def cached_data_dir(cls) -> Optional[str]:
    """The folder of ``cls.DATASET`` in the ``ablo data fetch`` cache
    (:func:`ablo.data.fetch.default_data_dir`) when it has been fetched there, else None."""
    if not cls.DATASET:
        return None
    from .data.fetch import cached

    folder = cached(cls.DATASET)
    return None if folder is None else str(folder)


def build(cls, overrides: Optional[Mapping[str, Any]] = None, tiny: Optional[Mapping[str, Any]] = None):
    """``cls`` from its defaults, then ``tiny`` (the experiment's smoke-run values), then the user's
    ``overrides`` (text or Python values), checked by :func:`check`.

    ``data_dir`` defaults to :func:`cached_data_dir` (the fetched ``cls.DATASET``) when neither
    ``overrides`` nor ``tiny`` set it and this is not a smoke run (``tiny`` None: smoke runs are
    sized for the built-in data); ``data_dir=none`` refuses the cache. The folder chosen is the
    config's ``data_dir``, so the manifest and summary.json record it."""
    values: Dict[str, Any] = {}
    for source in (tiny or {}, overrides or {}):
        for key, value in source.items():
            values[key] = parse_value(cls, key, value)
    cache = cached_data_dir(cls) if tiny is None and "data_dir" not in values else None
    if cache is not None:
        values["data_dir"] = cache
    cfg = cls(**values)
    try:
        return check(cfg, explicit=tuple(overrides or ()))
    except ConfigError as e:
        if cache is None:
            raise
        raise ConfigError(f"{e} (data_dir defaults to the fetched {cls.DATASET} in {cache}; data_dir=none reads "
                          f"the built-in data instead)") from None
