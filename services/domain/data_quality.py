"""Data-quality score (0..1) for one symbol's daily bars, with the reasons. Pure.

Starts at 1 and subtracts capped penalties:
- freshness: trading sessions between the last bar and the latest session visible at `now`
  (so a Monday morning after a Friday close is fresh, and so is the day after a holiday);
- gaps: trading days missing inside the recent window;
- cleaned rows: rows the cleaner dropped inside the recent window (null, filler, invalid...);
- stale prices: the same close repeated at the end, or no volume on the last bar of a stock.
Only the recent window (`window_days`) counts for gaps and cleaning: a gap five years ago
says little about today's data, but it is still listed in the cleaning report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.domain.bars import Bar, CleaningReport, latest_session, trading_days_between


@dataclass(frozen=True, slots=True)
class QualityParams:
    window_days: int = 365
    per_session_behind: float = 0.15
    max_freshness_penalty: float = 0.6
    per_gap: float = 0.05
    max_gap_penalty: float = 0.25
    per_cleaned_row: float = 0.02
    max_cleaning_penalty: float = 0.15
    stale_run_from: int = 3  # this many equal closes in a row at the end look frozen
    per_stale_bar: float = 0.1
    max_stale_penalty: float = 0.3
    zero_volume_penalty: float = 0.1


def _cleaned_dates(report: CleaningReport) -> list[date]:
    return [*report.null_rows, *report.non_trading_days, *report.filler_rows, *report.duplicate_dates]


def _freshness(bars: Sequence[Bar], expected: date, is_trading_day: Callable[[date], bool], p: QualityParams):
    last = bars[-1].date
    behind = len(trading_days_between(last + timedelta(days=1), expected, is_trading_day))
    if behind == 0:
        return 0.0, behind, None
    reason = (
        f"{behind} trading session(s) behind: last bar {last.isoformat()}, expected {expected.isoformat()}"
    )
    return min(p.max_freshness_penalty, behind * p.per_session_behind), behind, reason


def _trailing_equal_closes(bars: Sequence[Bar]) -> int:
    run = 1
    for prev, cur in zip(reversed(bars[:-1]), reversed(bars[1:]), strict=True):
        if prev.close != cur.close:
            break
        run += 1
    return run


def _staleness(bars: Sequence[Bar], is_index: bool, p: QualityParams) -> tuple[float, list[str], int]:
    penalty, reasons = 0.0, []
    run = _trailing_equal_closes(bars)
    if run >= p.stale_run_from:
        penalty += min(p.max_stale_penalty, (run - p.stale_run_from + 1) * p.per_stale_bar)
        reasons.append(f"close unchanged for the last {run} bars ({bars[-1].close})")
    # Index volume is often not reported at all, so zero volume is only suspicious for a stock.
    if not is_index and bars[-1].volume == 0:
        penalty += p.zero_volume_penalty
        reasons.append(f"no volume on the last bar ({bars[-1].date.isoformat()})")
    return penalty, reasons, run


def assess_quality(
    bars: Sequence[Bar],
    now: datetime,
    is_trading_day: Callable[[date], bool],
    cleaning: CleaningReport | None = None,
    *,
    is_index: bool = False,
    params: QualityParams = QualityParams(),
) -> dict:
    """{"score", "reasons", "sessions_behind", "gaps", "cleaned_rows", "stale_run", ...}."""
    p = params
    if not bars:
        return {"score": 0.0, "reasons": ["no data"], "sessions_behind": None, "gaps": 0, "cleaned_rows": 0}
    expected = latest_session(now, is_trading_day)
    window_start = expected - timedelta(days=p.window_days)
    report = cleaning or CleaningReport()
    fresh_penalty, behind, fresh_reason = _freshness(bars, expected, is_trading_day, p)
    reasons = [fresh_reason] if fresh_reason else []
    gaps = [d for d in report.missing_sessions if d >= window_start]
    if gaps:
        shown = ", ".join(d.isoformat() for d in gaps[:5]) + (" ..." if len(gaps) > 5 else "")
        reasons.append(f"{len(gaps)} missing trading day(s) in the last {p.window_days} days: {shown}")
    # Invalid rows always count: their date may be the unreadable part.
    cleaned = [d for d in _cleaned_dates(report) if d >= window_start] + list(report.invalid_rows)
    if cleaned:
        reasons.append(f"{len(cleaned)} row(s) cleaned in the last {p.window_days} days")
    stale_penalty, stale_reasons, run = _staleness(bars, is_index, p)
    reasons.extend(stale_reasons)
    penalty = (
        fresh_penalty
        + min(p.max_gap_penalty, len(gaps) * p.per_gap)
        + min(p.max_cleaning_penalty, len(cleaned) * p.per_cleaned_row)
        + stale_penalty
    )
    return {
        "score": round(max(0.0, 1.0 - penalty), 4),
        "reasons": reasons,
        "last_bar_date": bars[-1].date.isoformat(),
        "expected_date": expected.isoformat(),
        "sessions_behind": behind,
        "gaps": len(gaps),
        "cleaned_rows": len(cleaned),
        "stale_run": run,
    }
