"""The dashboard's MODELS lines: the set's age and live against validation accuracy, from
ml-model's health (recorded replies, with the model-set fields a current ml-model adds)."""

from __future__ import annotations

from services.management.dashboard_view import build_view, render_text
from tests.unit.test_dashboard_view import NOW, all_healthy, snapshot_of


def with_models(age_days: float, drifting: bool, warnings: list[str] | None = None) -> dict:
    replies = all_healthy()
    health = replies["health"]["ml-model"]
    health.update(
        model_set="20261121T200000Z",
        model_set_age_days=age_days,
        live_vs_validation={
            "CBA.AX": {
                "days": 12,
                "live_accuracy": 0.25 if drifting else 0.58,
                "validation_accuracy": 0.53,
                "drifting": drifting,
            },
            "WBC.AX": {"days": 0, "live_accuracy": None, "validation_accuracy": 0.52, "drifting": False},
        },
    )
    if warnings:
        health["warnings"] = warnings
    return replies


def test_models_lines_show_the_set_its_age_and_live_against_validation():
    view = build_view(snapshot_of(with_models(3.2, drifting=False)), NOW)
    assert view.models is not None and view.models.model_set == "20261121T200000Z"
    frame = render_text(view, 100)
    assert "MODELS 20261121T200000Z 3.2d old" in frame
    assert "live/val CBA 58%/53%" in frame and "WBC" not in frame.split("live/val")[1].splitlines()[0]


def test_an_old_or_drifting_set_is_marked():
    old = "model set 20261121T200000Z is 20 days old, over TRADING_ML_MODEL_MAX_AGE_DAYS=14: retrain"
    view = build_view(snapshot_of(with_models(20, drifting=True, warnings=[old])), NOW)
    assert view.models is not None and view.models.stale
    assert "CBA 25%/53%!" in render_text(view, 100)


def test_an_ml_model_without_sets_shows_no_models_lines():
    view = build_view(snapshot_of(all_healthy()), NOW)
    assert view.models is None and "MODELS" not in render_text(view, 100)
