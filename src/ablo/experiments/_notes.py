"""Sentences that results.md files share: whether a run is a smoke run, and whether the paper's
figure may stand beside it."""

from __future__ import annotations

import dataclasses
from typing import Mapping


def _plain(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def smoke_keys(cfg, tiny: Mapping) -> list:
    """The keys that ``cfg`` holds at the experiment's ``--tiny`` value (where that differs from the default)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    return [k for k, v in tiny.items() if _plain(getattr(cfg, k)) == _plain(v) != _plain(defaults[k])]


def smoke_note(cfg, tiny: Mapping) -> str:
    """A paragraph saying that this is a smoke run (some keys at their ``--tiny`` values), or ''."""
    keys = smoke_keys(cfg, tiny)
    if not keys:
        return ""
    return (f"**Smoke run** ({', '.join(keys)} at the --tiny values): it checks that the pipeline runs; its "
            "numbers reproduce nothing and say nothing about the paper's claims.\n\n")


def paper_note(quote: str, figure: str, dataset: str, real_data: bool, smoke: str) -> str:
    """``quote`` (the paper's ``figure``, in words) when the run read the paper's ``dataset`` and
    is not a smoke run; otherwise a sentence saying why it is not quoted."""
    if real_data and not smoke:
        return quote
    return f"{figure} is not quoted: this run " + ("is a smoke run." if smoke else f"did not read {dataset}.")
