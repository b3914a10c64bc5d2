"""Sentences that results.md files share: whether a run is a smoke run, and whether the paper's
figure may stand beside it."""

from __future__ import annotations

from .config import option

SMOKE_HELP = "a smoke run (--tiny sets it): results.md says that its numbers reproduce nothing"


def smoke_option():
    """The ``smoke`` field of a config: False, set to True by the experiment's TINY."""
    return option(False, SMOKE_HELP)


def smoke_note(cfg) -> str:
    """A paragraph saying that this is a smoke run (``cfg.smoke``, or ``cfg["smoke"]`` for a
    resolved dict), or ''."""
    if not (cfg["smoke"] if isinstance(cfg, dict) else cfg.smoke):
        return ""
    return ("**Smoke run** (--tiny: smoke = true): it checks that the pipeline runs; its numbers prove nothing "
            "about the methods or the paper's claims.\n\n")


def paper_note(quote: str, figure: str, dataset: str, real_data: bool, smoke: bool) -> str:
    """``quote`` (the paper's ``figure``, in words) when the run read the paper's ``dataset`` and
    is not a smoke run; otherwise a sentence saying why it is not quoted."""
    if real_data and not smoke:
        return quote
    return f"{figure} is not quoted: this run " + ("is a smoke run." if smoke else f"did not read {dataset}.")
