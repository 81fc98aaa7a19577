"""The ml-model service over its real socket on a private redis-server, with real model files
trained by the real training script (on synthetic bars, once per session) and a real SQLite log.

Covers: starting without models, the ensemble and its arithmetic, feature validation errors,
a tampered model file, a models folder others may write or own (exit 78, one line; not switched
to later), a tampered cached inference form (refused, converted again), live performance from recorded and from market-data-resolved outcomes,
and a serving process that never loads scikit-learn, scipy, pandas or numpy yet answers exactly
what scikit-learn does, whether its inference forms were cached by training, made by the
converter child, or found stale and remade.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.base.base_service import EXIT_NEEDS_OPERATOR, BaseService
from services.base.model_inference import INFERENCE_DIR, cache_path, read_cached
from services.base.model_store import Manifest, load_manifest, write_manifest
from services.base.rpc import InvalidParams, NotConfigured, NotFound, ServiceError
from services.domain import asx_calendar
from services.domain.bars import latest_session
from services.domain.features import FEATURE_NAMES, build_latest_features
from services.domain.model_voting import ensemble_weights
from services.market_data.providers import SyntheticSource
from services.ml_model import train_models
from services.ml_model.ml_prediction_log import outcome_after
from services.ml_model.model_catalog import MODEL_NAMES, probability_up
from services.ml_model.model_converter import dump_model, load_verified_model
from tests.support import (
    SHARED_ASX,
    Processes,
    ServiceProcess,
    SuiteDirs,
    async_wait_until,
    install_models,
    manager_cli,
    rpc_call_sync,
)

SYMBOLS = ["CBA.AX", "WBC.AX"]


# The service rounds probabilities, confidences and weights to 6 decimal places: a figure
# derived from rounded ones (confidence from a rounded probability, a sum of rounded weights
# times rounded probabilities) carries a few of those half-units of error.
DECIMALS = 6
HALF_UNIT = 0.5 * 10**-DECIMALS
# A call that waits for the converter child, which imports scikit-learn: seconds on an idle
# machine, tens of seconds on two busy cores (the service's own limit is 120 s).
CONVERTER_WAIT_S = 120.0


@pytest.fixture
def models(suite: SuiteDirs, synthetic_models: Path) -> Path:
    """Two banks' models (the session's Big 4 training, cut down to them) in this suite's folder."""
    return install_models(synthetic_models, suite.models_dir, SYMBOLS)


@pytest.fixture
def ml_service(suite: SuiteDirs, processes: Processes):
    """Starts ml-model (or another service) in this suite; the `processes` fixture stops it."""

    def start(name: str = "ml-model") -> ServiceProcess:
        return processes.start(name, suite)

    return start


async def _bars(symbol: str):
    # The same source and calendar the market-data service uses with TRADING_MARKET_DATA_SOURCE=synthetic.
    history = await SyntheticSource(asx_calendar.is_trading_day).fetch(symbol, datetime.now(UTC))
    return list(history.bars)


async def _features(symbol: str = "CBA.AX", sentiment: float = 0.2) -> dict[str, float]:
    return build_latest_features((await _bars(symbol))[-300:], (await _bars("^AXJO"))[-300:], sentiment)


async def _wait_for_health(client: BaseService, field: str, expected, timeout_s: float = 60.0) -> dict:
    """ml-model's health once `field` has reached `expected` (a timeout shows the last health)."""
    return await async_wait_until(
        lambda: client.call_service("ml-model", "health"),
        timeout_s,
        0.1,
        what=f"ml-model health {field} = {expected!r}",
        until=lambda health: health.get(field) == expected,
    )


def _past_session(sessions_back: int) -> date:
    day = latest_session(datetime.now(UTC), asx_calendar.is_trading_day)
    for _ in range(sessions_back):
        day = asx_calendar.previous_trading_day(day)
    return day


async def test_without_a_manifest_it_starts_degraded_and_says_how_to_train(suite, ml_service, client) -> None:
    process = ml_service()
    health = process.wait_healthy()
    assert health["status"] == "degraded"
    assert "train_models.py" in health["warnings"][0]
    calls = [
        ("list_available_models", {}),
        ("get_ensemble_prediction", {"features": (await _features()), "symbol": "CBA.AX"}),
        ("predict", {"model_name": "random_forest", "features": (await _features()), "symbol": "CBA.AX"}),
        ("load_model", {"model_name": "random_forest", "symbol": "CBA.AX"}),
        ("get_model_performance", {"symbol": "CBA.AX"}),
    ]
    for method, params in calls:
        with pytest.raises(NotConfigured, match=r"train_models\.py") as caught:
            await client.call_service("ml-model", method, **params)
        assert caught.value.code == -32002 and caught.value.data["command"].startswith("python ")


async def test_ensemble_over_the_socket(models, ml_service, client) -> None:
    ml_service()
    features = await _features()
    result = await client.call_service(
        "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX"
    )
    members = result["members"]
    assert [m["model_name"] for m in members] == list(MODEL_NAMES) and result["excluded"] == []
    manifest = load_manifest(models)
    expected_weights, _ = ensemble_weights(
        [manifest.find(n, "CBA.AX").metrics["roc_auc"] for n in MODEL_NAMES]
    )
    assert [m["weight"] for m in members] == pytest.approx(expected_weights, abs=2 * HALF_UNIT)
    combined = sum(m["weight"] * m["probability"] for m in members)
    assert result["probability"] == pytest.approx(combined, abs=1e-5)
    assert result["direction"] == ("up" if result["probability"] > 0.5 else "down")
    # |2p - 1| of the rounded p is off by up to two half-units, and the confidence is itself rounded.
    assert result["confidence"] == pytest.approx(abs(2 * result["probability"] - 1), abs=4 * HALF_UNIT)
    assert result["synthetic"] is True and result["feature_version"] == train_models.FEATURE_VERSION
    # Each member's probability is what the same model gives locally on the features in
    # FEATURE_NAMES order, even when the request lists them in another order.
    shuffled = dict(reversed(list(features.items())))
    again = await client.call_service(
        "ml-model", "get_ensemble_prediction", features=shuffled, symbol="CBA.AX"
    )
    row = np.array([[features[name] for name in FEATURE_NAMES]])
    for member, repeat in zip(members, again["members"], strict=True):
        local = load_verified_model(models, manifest.find(member["model_name"], "CBA.AX"))
        assert member["probability"] == pytest.approx(float(probability_up(local, row)[0]), abs=2 * HALF_UNIT)
        assert repeat["probability"] == member["probability"]
        single = await client.call_service(
            "ml-model", "predict", model_name=member["model_name"], features=features, symbol="CBA.AX"
        )
        assert single["probability"] == member["probability"] and single["version"] == member["version"]
        assert single["confidence"] == pytest.approx(abs(2 * single["probability"] - 1), abs=4 * HALF_UNIT)
    svm = await client.call_service("ml-model", "load_model", model_name="linear_svm", symbol="CBA.AX")
    assert svm["probability_source"].startswith("decision_function")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"drop": "rsi_14"}, "missing features: rsi_14"),
        ({"add": ("rsi", 50.0)}, "unexpected features: rsi"),
        ({"set": ("rsi_14", 700.0)}, "rsi_14=700 is outside"),
        ({"set": ("return_1d", "0.01")}, "return_1d must be a number"),
        # JSON has no NaN: a client's NaN arrives as null, still named.
        ({"set": ("volatility_20d", None)}, "volatility_20d must be a number"),
    ],
)
async def test_feature_validation_names_the_bad_features(
    models, ml_service, client, change, fragment
) -> None:
    ml_service()
    features = await _features()
    if "drop" in change:
        del features[change["drop"]]
    if "add" in change:
        features[change["add"][0]] = change["add"][1]
    if "set" in change:
        features[change["set"][0]] = change["set"][1]
    for method, extra in (("get_ensemble_prediction", {}), ("predict", {"model_name": "random_forest"})):
        with pytest.raises(InvalidParams) as caught:
            await client.call_service("ml-model", method, features=features, symbol="CBA.AX", **extra)
        assert caught.value.code == -32602 and caught.value.data["param"] == "features"
        assert any(fragment in p for p in caught.value.data["problems"]), caught.value.data
        assert caught.value.data["expected"] == list(FEATURE_NAMES)


async def test_unknown_models_symbols_and_bad_params(models, ml_service, client) -> None:
    ml_service()
    features = await _features()
    with pytest.raises(NotFound, match="available"):
        await client.call_service("ml-model", "predict", model_name="svm", features=features, symbol="CBA.AX")
    with pytest.raises(NotFound, match="trained symbols"):
        await client.call_service("ml-model", "load_model", model_name="random_forest", symbol="BHP.AX")
    with pytest.raises(NotFound):
        await client.call_service("ml-model", "get_ensemble_prediction", features=features, symbol="BHP.AX")
    with pytest.raises(InvalidParams, match="features"):  # a bare list: no names to check
        await client.call_service("ml-model", "get_ensemble_prediction", features=[0.0] * 16, symbol="CBA.AX")
    with pytest.raises(InvalidParams, match="as_of"):
        await client.call_service(
            "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX", as_of="2999-01-01"
        )


class _TouchOnUnpickle:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


async def test_a_tampered_model_file_is_refused_and_the_rest_still_vote(
    suite, models, ml_service, client
) -> None:
    marker = suite.root / "pickle-code-ran"
    # Training cached this model's inference form: the file is refused all the same.
    entry = load_manifest(models).find("random_forest", "CBA.AX")
    assert cache_path(models, entry.sha256).exists()
    (models / "CBA.AX__random_forest.joblib").write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    ml_service()
    with pytest.raises(ServiceError, match="does not match the manifest") as caught:
        await client.call_service("ml-model", "load_model", model_name="random_forest", symbol="CBA.AX")
    assert caught.value.data["reason"] == "integrity_check_failed"
    result = await client.call_service(
        "ml-model", "get_ensemble_prediction", features=(await _features()), symbol="CBA.AX"
    )
    assert [e["model_name"] for e in result["excluded"]] == ["random_forest"]
    assert "random_forest" not in [m["model_name"] for m in result["members"]]
    assert sum(m["weight"] for m in result["members"]) == pytest.approx(1.0, abs=1e-5)
    assert not marker.exists(), "the tampered pickle ran inside the service"
    health = await client.call_service("ml-model", "health")
    assert health["status"] == "degraded"
    assert any("CBA.AX random_forest refused: integrity_check_failed" in w for w in health["warnings"])


# ---- trust: who may write the models folder --------------------------------------------------


def _refusal(suite, processes) -> str:
    """Start ml-model, which must refuse to start: exit 78 (needs an operator) and one line."""
    process = processes.start("ml-model", suite, wait=False)
    assert process.wait_exit(60.0) == EXIT_NEEDS_OPERATOR, process.output()[-2000:]
    lines = [line for line in process.output().splitlines() if line.strip()]
    assert lines[-1].startswith("ml-model: refusing to serve models: "), lines[-5:]
    return lines[-1]


@pytest.mark.parametrize("where", ["models folder", "manifest"])
async def test_a_models_folder_others_may_write_is_refused_at_start(suite, models, processes, where) -> None:
    target = models if where == "models folder" else models / "manifest.json"
    target.chmod(0o775 if target.is_dir() else 0o664)
    line = _refusal(suite, processes)
    assert f"{target} is writable by group" in line and f"chmod -R go-w {models}" in line


@pytest.mark.timeout(400)  # the CLI's own bounds (start 90 s, stop 150 s) fail first, with the logs
def test_an_untrusted_models_folder_is_fatal_under_the_supervisor_with_the_line() -> None:
    with Processes() as processes:
        dirs = processes.suite(processes.suite_dirs("mt-", TRADING_MANAGER_MAX_FAILURES="5"))
        dirs.models_dir.mkdir(parents=True, exist_ok=True)
        dirs.models_dir.chmod(0o777)
        result = manager_cli(dirs, "start", "--timeout", "90")
        assert result.returncode == 1, result.stdout + result.stderr
        rows = {s["name"]: s for s in rpc_call_sync(dirs.socket("manager"), "status")["services"]}
        ml = rows["ml-model"]
        assert ml["state"] == "fatal" and ml["restarts"] == 0  # refused once, never restarted
        assert ml["reason"].startswith(
            f"needs an operator (exit {EXIT_NEEDS_OPERATOR}): ml-model: refusing to serve models: "
        )
        assert f"{dirs.models_dir} is writable by group and others (mode 0777)" in ml["reason"]
        assert manager_cli(dirs, "stop", timeout_s=150).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
async def test_a_models_folder_owned_by_another_user_is_refused_at_start(suite, models, processes) -> None:
    os.chown(models / "manifest.json", 65534, 65534)  # nobody: could rewrite the hashes
    line = _refusal(suite, processes)
    assert f"{models / 'manifest.json'} is owned by " in line and "uid 65534" in line


async def test_a_set_made_untrusted_later_is_not_switched_to(
    suite, synthetic_models, processes, client
) -> None:
    models = install_models(synthetic_models, suite.models_dir)  # sets and the current pointer
    processes.start("ml-model", suite)
    served = (await client.call_service("ml-model", "health"))["model_set"]
    new = _copy_set(suite.models_dir, served, "20991231T000000Z", SYMBOLS)
    new.chmod(0o777)
    (models / "current").write_text(new.name + "\n")
    reply = await client.call_service("ml-model", "reload_models")
    assert reply["switched"] is False and reply["model_set"] == served
    assert f"{new} is writable by group and others" in reply["reason"]


async def test_a_tampered_cached_form_is_refused_and_the_model_converted_again(
    suite, models, ml_service, client
) -> None:
    manifest = load_manifest(models)
    entry = manifest.find("logistic_regression", "CBA.AX")
    recorded = entry.raw["inference_sha256"]
    path = cache_path(models, entry.sha256)
    form = json.loads(path.read_text())
    # Still a valid form for this very model file (same source SHA-256, same shape), but it would
    # answer something else: only its hash gives it away. Its sidecar is rewritten to match.
    path.write_text(json.dumps({**form, "intercept": form["intercept"] + 3.0}))
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    process = ml_service()
    await _wait_for_health(client, "models_loaded", len(manifest.entries), timeout_s=CONVERTER_WAIT_S)
    loaded = await client.call_service(
        "ml-model", "load_model", model_name="logistic_regression", symbol="CBA.AX"
    )
    assert loaded["inference_form"] == "converter"
    features = await _features()
    result = await client.call_service(
        "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX"
    )
    member = next(m for m in result["members"] if m["model_name"] == "logistic_regression")
    row = np.array([[features[name] for name in FEATURE_NAMES]])
    expected = probability_up(load_verified_model(models, entry), row)[0]
    assert member["probability"] == round(float(expected), DECIMALS)
    assert f"refusing the cached inference form of {entry.file}" in process.output()
    assert "not the manifest's" in process.output()
    # The form remade from the hash-checked model file is byte for byte what training recorded.
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded


async def test_inventory_and_feature_importance(models, ml_service, client) -> None:
    ml_service()
    inventory = await client.call_service("ml-model", "list_available_models")
    assert inventory["count"] == len(SYMBOLS) * len(MODEL_NAMES)
    assert inventory["synthetic"] is True and "SYNTHETIC" in inventory["warning"]
    assert {(m["symbol"], m["model_name"]) for m in inventory["models"]} == {
        (s, n) for s in SYMBOLS for n in MODEL_NAMES
    }
    for name, native_method in [
        ("random_forest", "impurity decrease"),
        ("logistic_regression", "|coefficient| on standardised features"),
        ("linear_svm", "|coefficient| on standardised features"),
        ("hist_gradient_boosting", None),  # sklearn's HGB has no native importances
    ]:
        result = await client.call_service(
            "ml-model", "get_feature_importance", model_name=name, symbol="WBC.AX"
        )
        assert sorted(i["feature"] for i in result["importances"]) == sorted(FEATURE_NAMES)
        values = [i["importance"] for i in result["importances"]]
        assert values == sorted(values, reverse=True)
        assert (result["native"] or {}).get("method") == native_method
    # Every model is hash-checked and loaded at start, not only the four asked about.
    await _wait_for_health(client, "models_loaded", 8)
    loaded = await client.call_service("ml-model", "list_available_models")
    assert sum(m["loaded"] for m in loaded["models"]) == 8
    health = await client.call_service("ml-model", "health")
    assert (health["status"], health["models_available"], health["models_loaded"]) == ("healthy", 8, 8)
    assert "SYNTHETIC" in health["warnings"][0]  # said, though not degraded: the models do work
    everything = await client.call_service("ml-model", "get_model_performance")
    assert [s["symbol"] for s in everything["symbols"]] == SYMBOLS


async def test_live_accuracy_from_recorded_outcomes_survives_a_restart(models, ml_service, client) -> None:
    process = ml_service()
    features, day = (await _features()), _past_session(5).isoformat()
    first = await client.call_service(
        "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX", as_of=day
    )
    # Asked again the same day: served twice, but counted once in live accuracy.
    await client.call_service(
        "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX", as_of=day
    )
    await client.call_service(
        "ml-model", "predict", model_name="random_forest", features=features, symbol="CBA.AX", as_of=day
    )
    recorded = await client.call_service(
        "ml-model", "record_outcome", symbol="CBA.AX", as_of=day, outcome="up"
    )
    assert recorded["resolved"] == 2 * (len(MODEL_NAMES) + 1) + 1
    process.stop()
    await client.close_clients()  # its connection died with the old process
    ml_service()  # a new process reads the same SQLite file
    report = (await client.call_service("ml-model", "get_model_performance", symbol="CBA.AX"))["symbols"][0]
    by_name = {m["model_name"]: m for m in report["models"]}
    for member in first["members"]:
        live = by_name[member["model_name"]]["live"]
        assert live["served"] == (3 if member["model_name"] == "random_forest" else 2)
        assert (live["days"], live["resolved"], live["pending"]) == (1, 1, 0)
        assert live["accuracy"] == (1.0 if member["vote"] == "up" else 0.0)
        assert live["brier"] == pytest.approx((member["probability"] - 1.0) ** 2, abs=1e-4)
        assert by_name[member["model_name"]]["validation"]["n_test"] > 100
    assert report["ensemble"]["version"] == first["version"]
    assert report["ensemble"]["live"]["accuracy"] == (1.0 if first["direction"] == "up" else 0.0)
    assert set(report["baselines"]) == {"always_up", "yesterday_direction"}


async def test_outcomes_are_resolved_from_market_data(models, ml_service, client) -> None:
    ml_service()
    features = await _features("WBC.AX")
    day = _past_session(3)
    served = await client.call_service(
        "ml-model", "get_ensemble_prediction", features=features, symbol="WBC.AX", as_of=day.isoformat()
    )
    # market-data not running: the outcome stays pending and the report says why.
    report = await client.call_service("ml-model", "get_model_performance", symbol="WBC.AX")
    assert "market-data unavailable" in report["outcome_resolution"]
    assert report["symbols"][0]["ensemble"]["live"]["pending"] == 1
    ml_service("market-data")
    report = await client.call_service("ml-model", "get_model_performance", symbol="WBC.AX")
    assert "resolved from market-data (synthetic)" in report["outcome_resolution"]
    truth = outcome_after(day, await _bars("WBC.AX"))
    assert truth in ("up", "down")
    live = report["symbols"][0]["ensemble"]["live"]
    assert (live["resolved"], live["pending"]) == (1, 0)
    assert live["accuracy"] == (1.0 if served["direction"] == truth else 0.0)


async def test_a_market_data_update_settles_pending_outcomes(models, ml_service, client) -> None:
    ml_service()
    ml_service("market-data")
    day = _past_session(2).isoformat()
    await client.call_service(
        "ml-model", "get_ensemble_prediction", features=await _features(), symbol="CBA.AX", as_of=day
    )
    assert (await client.call_service("ml-model", "health"))["pending_outcomes"] == 1
    # Any fetch makes market-data publish market_data_updated; ml-model reacts by looking up bars.
    await client.call_service("market-data", "refresh_all_data", timeout=30.0)
    await _wait_for_health(client, "pending_outcomes", 0)  # the pending outcome resolved


async def test_a_model_the_converter_cannot_convert_is_left_out_with_its_reason(
    models, ml_service, client
) -> None:
    # A file that matches its (rewritten) manifest hash but holds no estimator: it passes the
    # integrity check, so only the converter child can find out, and must say what it found.
    manifest = load_manifest(models)
    sha = dump_model(models, "CBA.AX__linear_svm.joblib", {"weights": [1, 2, 3]})
    entries = [
        {**e.raw, "sha256": sha} if e.key == ("linear_svm", "CBA.AX") else e.raw for e in manifest.entries
    ]
    write_manifest(
        models, {k: v for k, v in manifest.raw.items() if k not in ("models", "schema_version")}, entries
    )
    ml_service()
    with pytest.raises(ServiceError, match="expected classes") as caught:
        await client.call_service(
            "ml-model", "load_model", timeout=CONVERTER_WAIT_S, model_name="linear_svm", symbol="CBA.AX"
        )
    assert caught.value.data["reason"] == "unsupported_model"
    result = await client.call_service(
        "ml-model",
        "get_ensemble_prediction",
        timeout=CONVERTER_WAIT_S,
        features=(await _features()),
        symbol="CBA.AX",
    )
    assert [e["model_name"] for e in result["excluded"]] == ["linear_svm"]
    assert len(result["members"]) == len(MODEL_NAMES) - 1
    assert not cache_path(models, sha).exists()  # nothing cached for it: it is retried next time
    health = await client.call_service("ml-model", "health")
    assert health["status"] == "degraded"
    assert any("linear_svm refused: unsupported_model" in w for w in health["warnings"])


HEAVY = ("sklearn", "scipy", "pandas", "numpy")


def _heavy_libraries_mapped(pid: int) -> set[str]:
    """Which heavy packages have files (their compiled extensions, bundled BLAS) mapped into pid."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in HEAVY if f"/{name}/" in maps or f"/{name}.libs/" in maps}


def _break_cache(models: Path, manifest: Manifest) -> None:
    """Every cached form made unusable, each in a different way the service must notice."""
    shas = [e.sha256 for e in manifest.entries]
    originals = {sha: cache_path(models, sha).read_text() for sha in shas}
    for i, sha in enumerate(shas):
        path = cache_path(models, sha)
        if i % 3 == 0:
            path.write_text('{"format": 1, "kind": "forest", "tre')  # torn write
        elif i % 3 == 1:  # another model's form under this name: its recorded source differs
            path.write_text(originals[shas[i - 1]])
        else:
            path.write_text(json.dumps({**json.loads(originals[sha]), "format": 0}))  # an older format


@pytest.mark.parametrize("cache", ["from training", "missing", "stale"])
async def test_the_service_never_loads_sklearn_and_answers_as_sklearn_does(
    models, ml_service, client, cache
) -> None:
    # Control: this test process has them loaded, so the /proc check can see them.
    assert {"sklearn", "scipy", "numpy"} <= _heavy_libraries_mapped(os.getpid())
    manifest = load_manifest(models)
    if cache == "missing":
        shutil.rmtree(models / INFERENCE_DIR)
    elif cache == "stale":
        _break_cache(models, manifest)
    process = ml_service()
    await _wait_for_health(client, "models_loaded", len(manifest.entries), timeout_s=120.0)
    for symbol in SYMBOLS:
        features = await _features(symbol)
        row = np.array([[features[name] for name in FEATURE_NAMES]])
        result = await client.call_service(
            "ml-model", "get_ensemble_prediction", features=features, symbol=symbol
        )
        assert len(result["members"]) == len(MODEL_NAMES)
        for member in result["members"]:
            model = load_verified_model(models, manifest.find(member["model_name"], symbol))
            assert member["probability"] == round(float(probability_up(model, row)[0]), DECIMALS), member
    origin = "cache" if cache == "from training" else "converter"
    for entry in manifest.entries:
        loaded = await client.call_service(
            "ml-model", "load_model", model_name=entry.model_name, symbol=entry.symbol
        )
        assert loaded["inference_form"] == origin
        # Whatever the service found, a good form for this very file is cached now: byte for byte
        # the one whose SHA-256 training recorded in the manifest.
        cached = read_cached(models, entry.sha256, len(FEATURE_NAMES), entry.raw["inference_sha256"])
        assert cached is not None and cached.source_sha256 == entry.sha256
    assert _heavy_libraries_mapped(process.pid) == set()
    health = await client.call_service("ml-model", "health")
    assert health["heavy_modules_loaded"] == [] and health["status"] == "healthy"


# ---- model sets: switching without a restart ---------------------------------------------------


def _copy_set(models_dir: Path, source: str, name: str, symbols: list[str]) -> Path:
    """A new set `name` made of `source`'s files, its manifest listing only `symbols`' models."""
    folder = models_dir / "sets" / name
    shutil.copytree(models_dir / "sets" / source, folder)
    raw = json.loads((folder / "manifest.json").read_text())
    raw["models"] = [m for m in raw["models"] if m["symbol"] in symbols]
    raw["symbols"] = symbols
    (folder / "manifest.json").write_text(json.dumps(raw))
    return folder


async def test_a_new_set_is_switched_to_under_load_without_a_failed_request(
    suite, synthetic_models, processes, client
) -> None:
    """Requests keep flowing while `current` moves to a new set: none fails, each says the set it
    came from, the process is the same; a set that does not verify is never switched to."""
    import asyncio
    import sqlite3

    from services.base.model_sets import current_name, promote

    install_models(synthetic_models, suite.models_dir)  # the versioned layout: sets/ and current
    first = current_name(suite.models_dir)
    assert first is not None
    process = processes.start("ml-model", suite, extra_env={"TRADING_ML_MODEL_WATCH_S": "0.2"})
    features = await _features()
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                reply = await client.call_service(
                    "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX"
                )
                seen.append(reply["model_set"])
            except Exception as exc:
                failures.append(exc)

    workers = [asyncio.create_task(load()) for _ in range(4)]
    await async_wait_until(lambda: len(seen), 60, 0.05, what="requests served", until=lambda n: n >= 20)
    second = _copy_set(suite.models_dir, first, "20300101T000000Z", ["CBA.AX"]).name
    promote(suite.models_dir, second, datetime.now(UTC), "test")
    health = await _wait_for_health(client, "model_set", second)
    await async_wait_until(
        lambda: seen[-1], 60, 0.05, what="a reply from the new set", until=lambda s: s == second
    )
    stop.set()
    await asyncio.gather(*workers)
    assert failures == [] and health["pid"] == process.pid
    switched_at = seen.index(second)
    assert set(seen[:switched_at]) == {first} and set(seen[switched_at:]) == {second}  # never back and forth
    with pytest.raises(NotFound):  # the new set has no WBC models: the switch is real
        await client.call_service("ml-model", "get_ensemble_prediction", features=features, symbol="WBC.AX")
    with sqlite3.connect(suite.data_dir / "ml_model.db") as db:
        recorded = dict(db.execute("SELECT model_set, COUNT(*) FROM served_predictions GROUP BY model_set"))
    assert set(recorded) == {first, second}

    # A set whose file does not match its hash, pointed at by hand: refused, the old one serves.
    bad = _copy_set(suite.models_dir, first, "20300102T000000Z", ["CBA.AX"])
    victim = json.loads((bad / "manifest.json").read_text())["models"][0]["file"]
    (bad / victim).write_bytes(b"not the model")
    (suite.models_dir / "current").write_text(bad.name + "\n")
    reply = await client.call_service("ml-model", "reload_models")
    assert reply["switched"] is False and reply["refused_set"] == bad.name and reply["model_set"] == second
    health = await client.call_service("ml-model", "health")
    assert health["model_set"] == second and any(bad.name in w for w in health["warnings"])
    again = await client.call_service(
        "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX"
    )
    assert again["model_set"] == second

    # Pointed back at a good set, reload_models switches at once.
    (suite.models_dir / "current").write_text(first + "\n")
    reply = await client.call_service("ml-model", "reload_models")
    assert reply["switched"] is True and reply["model_set"] == first and reply["previous"] == second


# ---- expiry and drift, on a moved suite clock ----------------------------------------------------


def _trained_at(models_dir: Path) -> datetime:
    from services.base.model_sets import serving_dir

    return datetime.fromisoformat(
        json.loads((serving_dir(models_dir) / "manifest.json").read_text())["generated_at"]
    )


async def test_an_old_set_degrades_then_its_votes_lose_their_weight(suite, models, processes, client) -> None:
    trained = _trained_at(models)
    features = await _features()
    for days, expired in ((20, False), (30, True)):
        process = processes.start(
            "ml-model",
            suite,
            extra_env={
                "TRADING_ML_MODEL_MAX_AGE_DAYS": "14",
                "TRADING_CLOCK_START": (trained + timedelta(days=days)).isoformat(),
            },
        )
        health = await client.call_service("ml-model", "health")
        assert health["status"] == "degraded" and health["model_set_age_days"] == pytest.approx(days, abs=0.2)
        assert any(f"{health['model_set_age_days']:g} days old" in w for w in health["warnings"])
        reply = await client.call_service(
            "ml-model",
            "get_ensemble_prediction",
            features=features,
            symbol="CBA.AX",
            as_of=_past_session(1).isoformat(),
        )
        weights = [m["weight"] for m in reply["members"]]
        if expired:
            assert weights == [0.0] * len(weights) and reply["probability"] == 0.5
            assert reply["expired"]["max_age_days"] == 14 and "no weight" in " ".join(health["warnings"])
        else:
            assert sum(weights) == pytest.approx(1.0, abs=1e-5) and reply["expired"] is None
        process.stop()


async def test_drift_warns_when_live_accuracy_falls_two_standard_errors_below(
    models, ml_service, client
) -> None:
    ml_service()
    features = await _features()
    for back in range(1, 8):  # seven served days, each later resolved against the vote
        day = _past_session(back).isoformat()
        reply = await client.call_service(
            "ml-model", "get_ensemble_prediction", features=features, symbol="CBA.AX", as_of=day
        )
        wrong = "down" if reply["direction"] == "up" else "up"
        await client.call_service("ml-model", "record_outcome", symbol="CBA.AX", as_of=day, outcome=wrong)
    health = await client.call_service("ml-model", "health")
    cba = health["live_vs_validation"]["CBA.AX"]
    assert cba["days"] == 7 and cba["live_accuracy"] == 0.0 and cba["drifting"] is True
    assert any("CBA.AX: live accuracy 0.00" in w and "drift" in w for w in health["warnings"])
    assert health["live_vs_validation"]["WBC.AX"]["days"] == 0  # nothing served: nothing said
    performance = await client.call_service("ml-model", "get_model_performance", symbol="CBA.AX")
    assert performance["live_vs_validation"]["CBA.AX"]["drifting"] is True


# ---- the scheduled retrain, end to end -------------------------------------------------------------


@pytest.mark.skipif(not SHARED_ASX.is_dir(), reason="shared ASX data (../shared/data/asx) not present")
async def test_the_scheduled_retrain_runs_end_to_end_on_the_asx_csvs(
    suite, processes, client, short_tmp
) -> None:
    """Saturday 06:00 on a sped-up suite clock: the scheduler's model_retrain task has ml-model
    train a candidate on the CSVs to the last completed session, apply the promotion rule, and
    record the decision in the run and in get_model_performance."""
    import asyncio
    import subprocess
    import sys

    from services.base.model_sets import current_name, read_manifest, read_status
    from services.ml_model.model_promotion import decide
    from tests.support import REPO

    market = short_tmp / "market"
    market.mkdir()
    for name in ("CBA.AX.csv", "AXJO.csv"):  # a copy: a fetch must never write into ../shared
        shutil.copy(SHARED_ASX / name, market / name)
    env = {"TRADING_SYMBOLS": "CBA.AX", "TRADING_MARKET_DATA_DIR": str(market), "OMP_NUM_THREADS": "1"}
    first = await asyncio.to_thread(  # the set in service: CBA on two years to the end of May 2019
        subprocess.run,
        [
            sys.executable,
            str(REPO / "services/ml-model/train_models.py"),
            "--data-dir",
            str(market),
            "--years",
            "2",
        ],
        env={**suite.env, **env, "TRADING_CLOCK_START": "2019-06-01T09:00:00+10:00"},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    serving = current_name(suite.models_dir)
    clock = {"TRADING_CLOCK_START": "2020-05-23T05:59:00+10:00", "TRADING_CLOCK_SPEED": "20"}  # a Saturday
    extra = {
        **env,
        **clock,
        "TRADING_ML_MODEL_RETRAIN_SOURCE": "csv",
        "TRADING_ML_MODEL_MAX_AGE_DAYS": "3650",
    }
    processes.start("ml-model", suite, extra_env=extra)
    processes.start("scheduler", suite, extra_env=extra)

    def retrain_runs():
        return client.call_service("scheduler", "get_task_history", task_id="model_retrain", limit=5)

    history = await async_wait_until(
        retrain_runs,
        900,
        0.5,
        what="a finished model_retrain run",
        until=lambda h: any(r["status"] in ("succeeded", "failed") for r in h["runs"]),
    )
    run = history["runs"][0]
    assert run["status"] == "succeeded", run
    decision = run["result"]
    candidate = decision["candidate"]
    assert candidate != serving and decision["previous"] == serving
    folder = suite.models_dir / "sets" / candidate
    manifest = read_manifest(folder)
    assert {m["data"]["label_end"] for m in manifest["models"]} == {"2020-05-20"}  # the files end there
    # The decision is the rule's, on the two manifests; the set's state and the pointer follow it.
    expected = decide(manifest, read_manifest(suite.models_dir / "sets" / serving), ["CBA.AX"])
    assert decision["promote"] is expected.promote and decision["reason"] == expected.reason
    assert read_status(folder)["state"] == ("promoted" if expected.promote else "rejected")
    assert current_name(suite.models_dir) == (candidate if expected.promote else serving)
    health = await client.call_service("ml-model", "health")
    assert health["model_set"] == current_name(suite.models_dir)
    performance = await client.call_service("ml-model", "get_model_performance")
    assert performance["retrain_decisions"][0]["candidate"] == candidate
    assert performance["retrain_decisions"][0]["symbols"][0]["symbol"] == "CBA.AX"


async def test_promote_and_rollback_from_the_cli_switch_a_running_service(
    suite, synthetic_models, processes, client
):
    from services.base.model_sets import current_name
    from tests.support import manager_cli

    install_models(synthetic_models, suite.models_dir)
    first = current_name(suite.models_dir)
    assert first is not None
    second = _copy_set(suite.models_dir, first, "20300101T000000Z", ["CBA.AX"]).name
    process = processes.start(
        "ml-model", suite, extra_env={"TRADING_ML_MODEL_WATCH_S": "3600"}
    )  # only the CLI
    promoted = await asyncio.to_thread(manager_cli, suite, "models", "promote", second)
    assert promoted.returncode == 0, promoted.stderr
    assert f"promoted {second} (was {first}); ml-model serves it now" in promoted.stdout
    assert (await client.call_service("ml-model", "health"))["model_set"] == second
    back = await asyncio.to_thread(manager_cli, suite, "models", "rollback")
    assert back.returncode == 0 and "ml-model serves it now" in back.stdout
    health = await client.call_service("ml-model", "health")
    assert health["model_set"] == first and health["pid"] == process.pid
