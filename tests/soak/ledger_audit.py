"""The books' audit shared by the soaks (crash_loop.py, redis_faults.py, chaos.py).

Reads the prediction service's and paper-trading's databases read-only (every row, however many
there are, in the exact decimals the ledger keeps) and asks the prediction service for its outbox,
then checks:

- no prediction lost: each one the prediction service saved has exactly one outcome in
  paper-trading (traded / rejected / ignored), and the prediction outbox is empty;
- no trade doubled: each prediction id is on at most one trade, each trade id once, and the
  outcomes say `traded` for exactly the predictions the trades name;
- the ledger balances: cash + cost of open positions == capital + realised P&L - commissions;
- both databases pass PRAGMA integrity_check.

`audit` raises AuditPending while the desk is still settling (an outcome or a send still due: the
caller asks again until its deadline) and AuditFailed for a broken invariant.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

STARTING_CAPITAL = Decimal(100_000)
Call = Callable[..., Any]  # call(service, method, **params) -> result


class AuditFailed(AssertionError):
    pass


class AuditPending(Exception):
    """Not settled yet (an outcome or a send still due): asked again until the deadline."""


def read_rows(path: Path, *queries: str) -> list[list[tuple]]:
    """Each query's rows from a service's database, read-only and in one read transaction: one
    snapshot, however the service keeps writing meanwhile (WAL)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN")
        return [db.execute(query).fetchall() for query in queries]
    finally:
        db.close()


def audit(call: Call, data_dir: Path, starting_capital: Decimal = STARTING_CAPITAL) -> str:
    """The invariants above on one desk; a one-line summary when they hold."""
    if call("prediction", "health")["outbox"]:
        raise AuditPending("prediction outbox not empty")
    predictions_db, ledger_db = data_dir / "predictions.db", data_dir / "paper_trading.db"
    [made_rows] = read_rows(predictions_db, "SELECT prediction_id FROM predictions")
    made = [pid for (pid,) in made_rows]
    outcome_rows, trades, accounts, positions = read_rows(
        ledger_db,
        "SELECT prediction_id, outcome, trade_id, detail FROM predictions",
        "SELECT trade_id, prediction_id FROM trades",
        "SELECT starting_capital, cash, realized_pnl, commissions_paid FROM account",
        "SELECT cost_basis FROM positions",
    )
    outcomes = {pid: (outcome, trade_id, detail) for pid, outcome, trade_id, detail in outcome_rows}
    missing = [pid for pid in made if pid not in outcomes]
    if missing:
        raise AuditPending(f"no outcome yet for {len(missing)} prediction(s), e.g. {missing[0]}")
    linked = [pid for _, pid in trades if pid]
    if len(linked) != len(set(linked)):
        raise AuditFailed(f"a prediction traded twice: {sorted(p for p in linked if linked.count(p) > 1)}")
    if len({tid for tid, _ in trades}) != len(trades):
        raise AuditFailed("a trade id twice")
    traded = {pid for pid, (outcome, _, _) in outcomes.items() if outcome == "traded"}
    if traded != set(linked):
        raise AuditFailed(f"outcomes and trades disagree: {sorted(traded ^ set(linked))}")
    (capital, cash, realised, commissions), *_ = accounts
    held = sum((Decimal(c) for (c,) in positions), Decimal(0))
    left = Decimal(cash) + held
    right = Decimal(capital) + Decimal(realised) - Decimal(commissions)
    if Decimal(capital) != starting_capital or abs(left - right) > Decimal("0.01") * (len(trades) + 1):
        raise AuditFailed(f"the ledger does not balance: {left} != {right} (capital {capital})")
    for path in (ledger_db, predictions_db):
        [verdict] = read_rows(path, "PRAGMA integrity_check")
        if verdict != [("ok",)]:
            raise AuditFailed(f"{path.name}: {verdict[:3]}")
    kinds = {k: sum(1 for o in outcomes.values() if o[0] == k) for k in ("traded", "rejected", "ignored")}
    why = sorted({o[2].split(":")[0] for o in outcomes.values() if o[0] != "traded"})
    shown = "; ".join(why[:6]) + (f"; {len(why) - 6} more" if len(why) > 6 else "")
    return (
        f"{len(made)} predictions ({kinds['traded']} traded, {kinds['rejected']} rejected,"
        f" {kinds['ignored']} ignored: {shown or '-'}), {len(trades)} trades, books balance"
    )
