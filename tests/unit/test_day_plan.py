"""The default trading day (services.domain.day_plan): what the scheduler seeds and the replay runs."""

from __future__ import annotations

from datetime import date

from services.domain import schedule as sch
from services.domain.day_plan import default_tasks
from services.management.replay import REFRESH_AT, TASK_NAMES, TRADE_AT

SYMBOLS = ("CBA.AX", "WBC.AX")
MONDAY = date(2024, 6, 17)  # a trading day


def specs() -> dict[str, sch.TaskSpec]:
    return {spec.name: spec for spec in map(sch.parse_task_config, default_tasks(SYMBOLS))}


def test_every_default_task_is_a_valid_config_with_a_unique_name():
    assert len(specs()) == len(default_tasks(SYMBOLS))
    assert all(spec.schedule is not None for spec in specs().values())


def test_dependencies_name_tasks_of_the_plan():
    names = set(specs())
    assert all(set(spec.depends_on) <= names for spec in specs().values())


def test_monitoring_predicts_the_given_symbols_afresh():
    predict = specs()["market_monitoring"].calls[-1]
    assert (predict.service, predict.method) == ("prediction", "generate_predictions")
    assert predict.params == {"symbols": list(SYMBOLS), "force_refresh": True}


def test_the_replay_runs_tasks_of_the_plan_at_their_first_times():
    # The replay driver runs these tasks itself, one step a day, at the times the plan gives them.
    plan = specs()
    assert set(TASK_NAMES) <= set(plan)
    refresh = sch.day_slots(plan["market_data_refresh"].schedule, MONDAY)
    monitoring = sch.day_slots(plan["market_monitoring"].schedule, MONDAY)
    assert [s.at.astimezone(sch.SYDNEY).time() for s in refresh] == [REFRESH_AT]
    assert monitoring[0].at.astimezone(sch.SYDNEY).time() == TRADE_AT
