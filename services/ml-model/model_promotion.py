"""The promotion rule for a retrained model set. Pure: manifests in, a decision out.

A candidate set replaces the current one only if, for every symbol of the universe, its best
model's walk-forward ROC AUC is
  - not worse than the current set's best for that symbol by more than one standard error (the
    larger of the two sets' Hanley-McNeil SEs: a smaller drop is noise, not a worse model), and
  - not worse than the best naive baseline (always up, yesterday's direction) scored on the
    candidate's own test days.
A current set trained on synthetic bars says nothing about real prices, so a candidate on real
data is held to the baselines alone; so is a candidate when no set serves. A candidate missing a
symbol, or without a ROC AUC for one, is rejected, as is a synthetic candidate replacing a real
set. Every symbol's figures and verdict are kept, so the decision can be read back later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SymbolVerdict:
    symbol: str
    ok: bool
    reason: str
    candidate_auc: float | None = None
    candidate_se: float | None = None
    current_auc: float | None = None
    current_se: float | None = None
    best_baseline_auc: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "ok": self.ok,
            "reason": self.reason,
            "candidate_roc_auc": self.candidate_auc,
            "candidate_roc_auc_se": self.candidate_se,
            "current_roc_auc": self.current_auc,
            "current_roc_auc_se": self.current_se,
            "best_baseline_roc_auc": self.best_baseline_auc,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    reason: str
    symbols: tuple[SymbolVerdict, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "symbols": [v.as_dict() for v in self.symbols],
        }


@dataclass(frozen=True, slots=True)
class Best:
    """A set's best model for one symbol, by walk-forward ROC AUC, and that symbol's baselines."""

    auc: float
    se: float
    model_name: str
    baseline_auc: float | None


def best_by_symbol(manifest: dict[str, Any]) -> dict[str, Best]:
    found: dict[str, Best] = {}
    for entry in manifest.get("models") or []:
        metrics = entry.get("metrics") or {}
        auc, se = metrics.get("roc_auc"), metrics.get("roc_auc_se")
        if not isinstance(auc, (int, float)):
            continue
        baselines = [
            b.get("roc_auc")
            for b in (entry.get("baselines") or {}).values()
            if isinstance(b, dict) and isinstance(b.get("roc_auc"), (int, float))
        ]
        best = Best(float(auc), float(se or 0.0), str(entry.get("model_name")), max(baselines, default=None))
        symbol = str(entry.get("symbol"))
        if symbol not in found or best.auc > found[symbol].auc:
            found[symbol] = best
    return found


def decide(candidate: dict[str, Any], current: dict[str, Any] | None, universe: Sequence[str]) -> Decision:
    """Promote the candidate manifest over the current one (None: nothing serves)?"""
    if candidate.get("synthetic") and current is not None and not current.get("synthetic"):
        return Decision(False, "the candidate was trained on synthetic bars; the current set on market data")
    against_current = current is not None and not (
        current.get("synthetic") and not candidate.get("synthetic")
    )
    mine = best_by_symbol(candidate)
    theirs = best_by_symbol(current) if current is not None and against_current else {}
    verdicts = tuple(_verdict(symbol, mine.get(symbol), theirs.get(symbol)) for symbol in universe)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        return Decision(False, "; ".join(f"{v.symbol}: {v.reason}" for v in failed), verdicts)
    basis = "the current set and the baselines" if against_current else "the baselines (no real current set)"
    return Decision(True, f"every symbol holds up against {basis}", verdicts)


def _verdict(symbol: str, mine: Best | None, theirs: Best | None) -> SymbolVerdict:
    if mine is None:
        return SymbolVerdict(symbol, False, "no model with a ROC AUC in the candidate")
    figures = {
        "candidate_auc": mine.auc,
        "candidate_se": mine.se,
        "current_auc": None if theirs is None else theirs.auc,
        "current_se": None if theirs is None else theirs.se,
        "best_baseline_auc": mine.baseline_auc,
    }
    if mine.baseline_auc is not None and mine.auc < mine.baseline_auc:
        reason = f"ROC AUC {mine.auc:.4f} is below the best naive baseline's {mine.baseline_auc:.4f}"
        return SymbolVerdict(symbol, False, reason, **figures)
    if theirs is not None:
        allowed = max(mine.se, theirs.se)
        if mine.auc < theirs.auc - allowed:
            reason = (
                f"ROC AUC {mine.auc:.4f} is {theirs.auc - mine.auc:.4f} below the current set's "
                f"{theirs.auc:.4f}, more than one standard error ({allowed:.4f})"
            )
            return SymbolVerdict(symbol, False, reason, **figures)
        reason = f"ROC AUC {mine.auc:.4f} against the current {theirs.auc:.4f} (one SE {allowed:.4f})"
        return SymbolVerdict(symbol, True, reason, **figures)
    return SymbolVerdict(symbol, True, f"ROC AUC {mine.auc:.4f}, not below the baselines", **figures)
