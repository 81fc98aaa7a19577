"""Which IG epic prices which symbol: one mapping for every service that talks to IG.

paper-trading (mirroring and reconciling deals) and market-data (IG quotes and bars) both take
their epics from here: each symbol's default epic (`default_epic`) unless
TRADING_PAPER_TRADING_IG_EPICS (`SYMBOL=EPIC,...`, read by `parse_epic_overrides`) names another.
That one variable serves both, so the two services never disagree on what a symbol is at IG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def default_epic(symbol: str) -> str:
    """IG epic for an ASX share CFD, in the form third-party ASX projects use (not official)."""
    return f"AA.D.{symbol.split('.')[0].upper()}.CASH.IP"


def parse_epic_overrides(text: str) -> Mapping[str, str]:
    """`CBA.AX=AA.D.CBA.CASH.IP,...`: IG epic by symbol (upper-cased)."""
    epics: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        symbol, sep, epic = item.partition("=")
        if not sep or not symbol.strip() or not epic.strip():
            raise ValueError(f"{item!r} is not SYMBOL=EPIC")
        epics[symbol.strip().upper()] = epic.strip()
    return epics


def epics_for(symbols: Iterable[str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The IG epic of each symbol: its default epic unless TRADING_PAPER_TRADING_IG_EPICS names one
    (an override may also name a symbol outside `symbols`, e.g. the index)."""
    return {s: default_epic(s) for s in symbols} | dict(overrides)
