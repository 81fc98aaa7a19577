"""The promotion rule for a retrained set (services/ml-model/model_promotion.py), by table."""

from __future__ import annotations

import pytest

from services.ml_model.model_promotion import best_by_symbol, decide


def entry(symbol: str, auc: float | None, se: float = 0.02, model: str = "logistic_regression", baseline=0.5):
    return {
        "symbol": symbol,
        "model_name": model,
        "metrics": {"roc_auc": auc, "roc_auc_se": se},
        "baselines": {"always_up": {"roc_auc": 0.5}, "yesterday_direction": {"roc_auc": baseline}},
    }


def manifest(*entries, synthetic=False):
    return {"synthetic": synthetic, "models": list(entries)}


CURRENT = manifest(entry("CBA.AX", 0.55), entry("CBA.AX", 0.53, model="random_forest"))


@pytest.mark.parametrize(
    ("candidate", "current", "promote", "fragment"),
    [
        (manifest(entry("CBA.AX", 0.57)), CURRENT, True, "against the current 0.5500"),  # better
        (manifest(entry("CBA.AX", 0.55)), CURRENT, True, "against the current 0.5500"),  # equal
        # worse, but by less than one SE (0.02): noise, promoted
        (manifest(entry("CBA.AX", 0.535)), CURRENT, True, "one SE 0.0200"),
        # worse by more than one SE: kept as rejected, with the figures
        (manifest(entry("CBA.AX", 0.52)), CURRENT, False, "0.0300 below the current set's 0.5500"),
        # the larger SE of the two counts: the current's 0.04 lets 0.52 through
        (
            manifest(entry("CBA.AX", 0.52, se=0.01)),
            manifest(entry("CBA.AX", 0.55, se=0.04)),
            True,
            "one SE 0.0400",
        ),
        # better than the current but below the best naive baseline (yesterday's direction at 0.56)
        (
            manifest(entry("CBA.AX", 0.555, baseline=0.56)),
            CURRENT,
            False,
            "below the best naive baseline's 0.5600",
        ),
        # the best of a symbol's models counts, not the first
        (
            manifest(entry("CBA.AX", 0.40), entry("CBA.AX", 0.56, model="random_forest")),
            CURRENT,
            True,
            "0.5600",
        ),
        (
            manifest(entry("WBC.AX", 0.60)),
            CURRENT,
            False,
            "CBA.AX: no model with a ROC AUC",
        ),  # a symbol missing
        (manifest(entry("CBA.AX", None)), CURRENT, False, "no model with a ROC AUC"),
        # nothing serves: the baselines alone
        (manifest(entry("CBA.AX", 0.51)), None, True, "not below the baselines"),
        # a real candidate over a synthetic current: the synthetic figures say nothing
        (
            manifest(entry("CBA.AX", 0.51)),
            manifest(entry("CBA.AX", 0.70), synthetic=True),
            True,
            "no real current",
        ),
        # and never synthetic over real
        (manifest(entry("CBA.AX", 0.90), synthetic=True), CURRENT, False, "synthetic bars"),
    ],
)
def test_the_rule(candidate, current, promote, fragment):
    decision = decide(candidate, current, ["CBA.AX"])
    text = decision.reason + " " + " ".join(v.reason for v in decision.symbols)
    assert decision.promote is promote, text
    assert fragment in text


def test_every_symbol_must_hold_and_each_verdict_is_kept():
    current = manifest(entry("CBA.AX", 0.55), entry("WBC.AX", 0.55))
    candidate = manifest(entry("CBA.AX", 0.58), entry("WBC.AX", 0.45))
    decision = decide(candidate, current, ["CBA.AX", "WBC.AX"])
    assert not decision.promote and decision.reason.startswith("WBC.AX:")
    assert [(v["symbol"], v["ok"]) for v in decision.as_dict()["symbols"]] == [
        ("CBA.AX", True),
        ("WBC.AX", False),
    ]
    assert decision.as_dict()["symbols"][1]["current_roc_auc"] == 0.55


def test_best_by_symbol_skips_models_without_figures():
    best = best_by_symbol(manifest(entry("CBA.AX", None), entry("CBA.AX", 0.52, model="linear_svm")))
    assert best["CBA.AX"].model_name == "linear_svm" and best["CBA.AX"].baseline_auc == 0.5
