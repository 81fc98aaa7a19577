"""Which IG epic prices which symbol: one mapping for every service that talks to IG.

paper-trading (mirroring and reconciling deals) and market-data (IG quotes and bars) both take
their epics from here: each symbol's default epic (`default_epic`) unless
TRADING_PAPER_TRADING_IG_EPICS (`SYMBOL=EPIC,...`, read by `parse_epic_overrides`) names another.
That one variable serves both, so the two services never disagree on what a symbol is at IG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Read by paper-trading's knobs (its `ig_epics`) and by market-data through `epic_overrides`: one
# variable, one knob (the knob reader gives each variable to one service's dataclass).
IG_EPICS_VARIABLE = "TRADING_PAPER_TRADING_IG_EPICS"


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


def epic_overrides(environ: Mapping[str, str]) -> Mapping[str, str]:
    """TRADING_PAPER_TRADING_IG_EPICS from `environ`; ValueError naming the variable when malformed."""
    try:
        return parse_epic_overrides(environ.get(IG_EPICS_VARIABLE, ""))
    except ValueError as exc:
        raise ValueError(f"{IG_EPICS_VARIABLE}: {exc}") from None
