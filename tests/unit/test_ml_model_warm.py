"""ml-model's warm-up under the supervisor waits for the first health check (services/ml-model/
ml_model_service.py _warm): the restart's last step, the supervisor's health check, is then not
slowed by the warm-up's thread. Unsupervised (by hand), it starts at once. The models themselves
are covered over the real socket in tests/service/test_ml_model_service.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from services.base.config import Settings
from services.ml_model import ml_model_service as module
from services.ml_model.ml_model_service import MlModelService


def a_service(tmp_path, supervised: bool) -> tuple[MlModelService, list[str]]:
    env = {"TRADING_DATA_DIR": str(tmp_path / "d"), "TRADING_MODELS_DIR": str(tmp_path / "m")}
    if supervised:
        env["TRADING_SUPERVISED"] = "1"
    service = MlModelService(settings=Settings.from_env(env))
    loads: list[str] = []

    async def load(entries, served):
        loads.append("load")
        return {}

    service._load = load  # type: ignore[method-assign]
    return service, loads


SERVED = SimpleNamespace(manifest=SimpleNamespace(entries=[]))


async def test_under_the_supervisor_the_warm_up_waits_for_the_first_health_check(tmp_path):
    service, loads = a_service(tmp_path, supervised=True)
    warm = asyncio.create_task(service._warm(SERVED))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert loads == [] and not warm.done()
    with pytest.raises(AttributeError):  # no prediction log: health_details sets the event first
        await service.health_details()
    await asyncio.wait_for(warm, 10)
    assert loads == ["load"]


async def test_it_waits_a_bounded_time_and_not_at_all_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(module, "WARM_AFTER_HEALTH_S", 0.05)
    service, loads = a_service(tmp_path, supervised=True)
    await asyncio.wait_for(service._warm(SERVED), 10)  # type: ignore[arg-type]
    assert loads == ["load"]  # nobody asked: loaded after the bound
    monkeypatch.setattr(module, "WARM_AFTER_HEALTH_S", 3600.0)
    service, loads = a_service(tmp_path, supervised=False)
    await asyncio.wait_for(service._warm(SERVED), 10)  # type: ignore[arg-type]
    assert loads == ["load"]
