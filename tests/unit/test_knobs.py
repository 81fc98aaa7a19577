"""Knobs: one frozen dataclass per service, filled from the environment by one reader."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest

from services.base.config import ConfigError, Settings
from services.base.events import EventBusKnobs
from services.base.knobs import all_knobs, describe, knob, prefix_of, read_knobs
from services.domain import risk
from services.domain.signals import SignalConfig
from services.management.manager_knobs import DashboardKnobs, SupervisorKnobs
from services.market_data.market_data_knobs import MarketDataKnobs
from services.ml_model.ml_model_knobs import MlModelKnobs
from services.paper_trading.paper_trading_knobs import PaperTradingKnobs
from services.prediction.prediction_knobs import PredictionKnobs
from services.scheduler.scheduler_knobs import SchedulerKnobs
from services.sentiment.sentiment_knobs import SentimentKnobs

SERVICES = Path(__file__).resolve().parents[2] / "services"


@dataclass(frozen=True, slots=True)
class Group:
    ratio: float = dataclasses.field(default=0.5, metadata={"bounds": "[0, 1]", "doc": "a share"})
    steps: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.ratio <= 1:
            raise ValueError(f"ratio must be in [0, 1], got {self.ratio!r}")


@dataclass(frozen=True, slots=True)
class Toy:
    service: ClassVar[str] = "toy-box"

    count: int = knob(3, low=1, high=10, doc="how many")
    delay_s: float = knob(0.5, low=0.0, doc="how long")
    enabled: bool = knob(True, doc="on or off")
    label: str = knob("x", doc="a name")
    money: Decimal = knob(Decimal(100), low=1, high=1e6, doc="AUD")
    names: tuple[str, ...] = knob(("a", "b"), doc="a list")
    pairs: Mapping[str, str] = knob({}, doc="KEY=VALUE list")
    shout: str = knob("hi", parse=lambda raw: raw.strip().upper(), doc="upper-cased")
    entry: Mapping[str, str] = knob({}, family="NAME", doc="one per name")
    legacy: str = knob("old", env="TRADING_LEGACY_NAME", doc="named before the rule")
    group: Group = knob(Group, strict=True, doc="nested")

    def __post_init__(self) -> None:
        if self.count > 5 and not self.enabled:
            raise ValueError("more than 5 needs enabled")


# ---- names ------------------------------------------------------------------------------------


def test_names_are_derived_from_service_and_field():
    assert prefix_of(Toy) == "TRADING_TOY_BOX_"
    assert [row.env for row in describe(Toy)] == [
        "TRADING_TOY_BOX_COUNT",
        "TRADING_TOY_BOX_DELAY_S",
        "TRADING_TOY_BOX_ENABLED",
        "TRADING_TOY_BOX_LABEL",
        "TRADING_TOY_BOX_MONEY",
        "TRADING_TOY_BOX_NAMES",
        "TRADING_TOY_BOX_PAIRS",
        "TRADING_TOY_BOX_SHOUT",
        "TRADING_TOY_BOX_ENTRY_<NAME>",
        "TRADING_LEGACY_NAME",  # an explicit name wins
        "TRADING_TOY_BOX_GROUP_RATIO",  # a group's fields sit under the group's name
        "TRADING_TOY_BOX_GROUP_STEPS",
    ]


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (PaperTradingKnobs, "TRADING_PAPER_TRADING_STOP_LOSS_PCT"),
        (PaperTradingKnobs, "TRADING_PAPER_TRADING_STARTING_CAPITAL"),
        (PaperTradingKnobs, "TRADING_PAPER_TRADING_IG_EPICS"),
        (MarketDataKnobs, "TRADING_MARKET_DATA_CACHE_S"),
        (MlModelKnobs, "TRADING_ML_MODEL_RESOLVE_INTERVAL_S"),
        (SentimentKnobs, "TRADING_SENTIMENT_MARKET_COUNTRY"),
        (PredictionKnobs, "TRADING_PREDICTION_TIMEOUT_S"),
        (PredictionKnobs, "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD"),  # the combiner's group
        (SchedulerKnobs, "TRADING_SCHEDULER_DEFAULTS"),
        (SupervisorKnobs, "TRADING_MANAGER_FAILURE_WINDOW_S"),
        (SupervisorKnobs, "TRADING_MANAGER_ENTRY_<SERVICE>"),
        (SupervisorKnobs, "TRADING_REDIS_MAXMEMORY"),  # older than the rule, kept
        (DashboardKnobs, "TRADING_DASHBOARD_LOG_LINES"),
        (EventBusKnobs, "TRADING_EVENTS_MAX_DELIVERIES"),
    ],
)
def test_every_documented_name_is_still_read(cls, name):
    assert name in {row.env for row in describe(cls)}


def test_all_knobs_lists_every_service_once():
    names = [row.env for row in all_knobs()]
    assert len(names) == len(set(names))
    assert all(name.startswith("TRADING_") for name in names)
    prefixes = {name.split("_")[1] for name in names}
    assert {"EVENTS", "MANAGER", "DASHBOARD", "MARKET", "SENTIMENT", "ML", "PREDICTION"} <= prefixes
    assert {"SCHEDULER", "PAPER", "REDIS"} <= prefixes
    assert all(row.doc for row in all_knobs()), "every knob has a one-line doc"


def test_describe_gives_the_table_row():
    rows = {row.env: row for row in describe(Toy)}
    count = rows["TRADING_TOY_BOX_COUNT"]
    assert (count.type, count.default, count.bounds, count.doc) == ("int", "3", "1..10", "how many")
    assert rows["TRADING_TOY_BOX_DELAY_S"].bounds == ">= 0"
    assert rows["TRADING_TOY_BOX_ENABLED"].default == "true"
    assert rows["TRADING_TOY_BOX_NAMES"].default == "a,b"
    assert rows["TRADING_TOY_BOX_GROUP_RATIO"].bounds == "[0, 1]"  # a group's own interval


# ---- reading ----------------------------------------------------------------------------------


def test_unset_or_blank_gives_the_defaults():
    assert read_knobs(Toy, {}) == Toy()
    assert read_knobs(Toy, {"TRADING_TOY_BOX_COUNT": "  ", "TRADING_TOY_BOX_LABEL": ""}) == Toy()


def test_each_type_is_parsed():
    knobs = read_knobs(
        Toy,
        {
            "TRADING_TOY_BOX_COUNT": " 4 ",
            "TRADING_TOY_BOX_DELAY_S": "1e3",
            "TRADING_TOY_BOX_ENABLED": "off",
            "TRADING_TOY_BOX_LABEL": "a b ",  # text is kept as written
            "TRADING_TOY_BOX_MONEY": "0.1e3",
            "TRADING_TOY_BOX_NAMES": " c, ,d ",
            "TRADING_TOY_BOX_PAIRS": "k=v, x = y",
            "TRADING_TOY_BOX_SHOUT": " hey ",
            "TRADING_TOY_BOX_ENTRY_ONE": "one.py",
            "TRADING_TOY_BOX_ENTRY_TWO": " ",  # blank: as if unset
            "TRADING_LEGACY_NAME": "new",
            "TRADING_TOY_BOX_GROUP_RATIO": "0.25",
            "OTHER": "ignored",
        },
    )
    assert knobs.count == 4 and knobs.delay_s == 1000.0 and knobs.enabled is False
    assert knobs.label == "a b "
    assert knobs.money == Decimal("100.0") and isinstance(knobs.money, Decimal)
    assert knobs.names == ("c", "d")
    assert dict(knobs.pairs) == {"k": "v", "x": "y"}
    assert knobs.shout == "HEY"
    assert dict(knobs.entry) == {"ONE": "one.py"}
    assert knobs.legacy == "new"
    assert knobs.group == Group(ratio=0.25)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRADING_TOY_BOX_COUNT": "three"}, "TRADING_TOY_BOX_COUNT: 'three' is not an integer"),
        ({"TRADING_TOY_BOX_COUNT": "2.5"}, "TRADING_TOY_BOX_COUNT: '2.5' is not an integer"),
        ({"TRADING_TOY_BOX_COUNT": "11"}, "TRADING_TOY_BOX_COUNT: 11 is outside 1..10"),
        ({"TRADING_TOY_BOX_DELAY_S": "soon"}, "TRADING_TOY_BOX_DELAY_S: 'soon' is not a number"),
        ({"TRADING_TOY_BOX_DELAY_S": "-1"}, "TRADING_TOY_BOX_DELAY_S: -1 is below 0"),
        ({"TRADING_TOY_BOX_DELAY_S": "nan"}, "TRADING_TOY_BOX_DELAY_S: 'nan' is not a number"),
        ({"TRADING_TOY_BOX_ENABLED": "maybe"}, "TRADING_TOY_BOX_ENABLED: 'maybe' is not a boolean"),
        ({"TRADING_TOY_BOX_MONEY": "0"}, "TRADING_TOY_BOX_MONEY: 0 is outside 1..1e+06"),
        ({"TRADING_TOY_BOX_MONEY": "lots"}, "TRADING_TOY_BOX_MONEY: 'lots' is not a number"),
        ({"TRADING_TOY_BOX_PAIRS": "k=v,oops"}, "TRADING_TOY_BOX_PAIRS: 'oops' is not KEY=VALUE"),
        ({"TRADING_TOY_BOX_GROUP_RATIO": "2"}, "TRADING_TOY_BOX_GROUP_RATIO: ratio must be in"),
        ({"TRADING_TOY_BOX_GROUP_STEPS": "x"}, "TRADING_TOY_BOX_GROUP_STEPS: 'x' is not an integer"),
        # A typo in a strict group must not pass silently.
        ({"TRADING_TOY_BOX_GROUP_RATO": "0.1"}, "TRADING_TOY_BOX_GROUP_RATO: no such knob"),
        # The dataclass's own check: the variable that breaks it alone is named...
        ({"TRADING_TOY_BOX_COUNT": "6", "TRADING_TOY_BOX_ENABLED": "yes"}, None),
        # ...and when only the combination is wrong, both are.
        (
            {"TRADING_TOY_BOX_COUNT": "6", "TRADING_TOY_BOX_ENABLED": "no"},
            "TRADING_TOY_BOX_COUNT, TRADING_TOY_BOX_ENABLED: more than 5 needs enabled",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env, message):
    if message is None:
        read_knobs(Toy, env)
        return
    with pytest.raises(ConfigError) as raised:
        read_knobs(Toy, env)
    text = str(raised.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_knobs_are_frozen():
    for cls in (Toy, PaperTradingKnobs, PredictionKnobs, SupervisorKnobs):
        knobs = read_knobs(cls, {})
        name = dataclasses.fields(knobs)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(knobs, name, 1)


def test_settings_accessors_share_the_parsers():
    s = Settings.from_env({"TRADING_X": "maybe", "TRADING_Y": "7", "TRADING_Z": "-3"})
    with pytest.raises(ConfigError, match="TRADING_X: 'maybe' is not a boolean"):
        s.env_bool("TRADING_X", False)
    assert s.env_int("TRADING_Y", 1, low=0, high=10) == 7
    with pytest.raises(ConfigError, match="TRADING_Z: -3 is below 0"):
        s.env_float("TRADING_Z", 1.0, low=0)


# ---- the services' knobs: names, defaults and meaning unchanged -------------------------------


def test_paper_trading_defaults_are_the_risk_rules():
    knobs = read_knobs(PaperTradingKnobs, {})
    assert knobs.risk_rules() == risk.RiskRules()
    assert knobs.risk_rules().commission_formula() == "$10 + 0.1% of trade value"
    assert knobs.starting_capital == Decimal("100000") and str(knobs.starting_capital) == "100000"
    assert knobs.follow_signals and not knobs.ig_mirror and dict(knobs.ig_epics) == {}


def test_paper_trading_percentages_become_fractions():
    knobs = read_knobs(
        PaperTradingKnobs,
        {"TRADING_PAPER_TRADING_STOP_LOSS_PCT": "2.5", "TRADING_PAPER_TRADING_COMMISSION_PCT": "0.2"},
    )
    assert knobs.risk_rules().stop_loss_fraction == Decimal("0.025")
    assert knobs.risk_rules().commission_rate == Decimal("0.002")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRADING_PAPER_TRADING_MAX_EXPOSURE_PCT": "120"}, "TRADING_PAPER_TRADING_MAX_EXPOSURE_PCT: 120"),
        (
            {"TRADING_PAPER_TRADING_IG_EPICS": "CBA.AX"},
            "TRADING_PAPER_TRADING_IG_EPICS: 'CBA.AX' is not SYMBOL=EPIC",
        ),
        # Set-up's old bound was 1..; the service's 1..1e12 is the one kept.
        ({"TRADING_PAPER_TRADING_STARTING_CAPITAL": "1e13"}, "TRADING_PAPER_TRADING_STARTING_CAPITAL"),
    ],
)
def test_paper_trading_bad_values(env, message):
    with pytest.raises(ConfigError, match=message):
        read_knobs(PaperTradingKnobs, env)


def test_epic_overrides_are_upper_cased_symbols():
    knobs = read_knobs(PaperTradingKnobs, {"TRADING_PAPER_TRADING_IG_EPICS": " cba.ax = IX.D.CBA.X ,"})
    assert dict(knobs.ig_epics) == {"CBA.AX": "IX.D.CBA.X"}
    with pytest.raises(TypeError):
        knobs.ig_epics["WBC.AX"] = "X"  # type: ignore[index]


def test_set_up_opens_the_ledger_with_the_services_starting_capital(tmp_path):
    from services.management import databases

    settings = Settings.from_env(
        {"TRADING_DATA_DIR": str(tmp_path), "TRADING_PAPER_TRADING_STARTING_CAPITAL": "2500"}
    )
    ledger = next(db for _service, db in databases.databases() if db.file == "paper_trading.db")
    store = databases.open_store(ledger, settings)
    try:
        assert store.load_portfolio().cash == Decimal("2500")
    finally:
        store.close()


def test_market_data_retry_never_outlasts_the_cache():
    knobs = read_knobs(MarketDataKnobs, {"TRADING_MARKET_DATA_CACHE_S": "10"})
    assert knobs.retry_s == 30.0 and knobs.failure_retry_s == 10.0
    assert knobs.technical.rsi_period == 14 and knobs.technical.bollinger_period == 20


def test_sentiment_country_is_normalised():
    assert read_knobs(SentimentKnobs, {}).market_country == "au"
    assert read_knobs(SentimentKnobs, {"TRADING_SENTIMENT_MARKET_COUNTRY": " NZ "}).market_country == "nz"


def test_supervisor_knobs():
    knobs = read_knobs(
        SupervisorKnobs,
        {"TRADING_MANAGER_ENTRY_MARKET_DATA": "tests/x.py", "TRADING_MANAGER_FAILURE_WINDOW_S": "60"},
    )
    assert knobs.entry_override("market-data") == "tests/x.py"
    assert knobs.entry_override("sentiment") is None
    assert knobs.restart_policy().window_s == 60.0 and knobs.restart_policy().max_failures == 5
    assert knobs.redis_maxmemory == "64mb"


def test_prediction_buy_rate_checks_run_when_read():
    knobs = read_knobs(PredictionKnobs, {})
    assert (knobs.buy_rate.window_size, knobs.buy_rate.threshold, knobs.buy_rate.min_samples) == (50, 0.7, 10)
    assert knobs.history_days == 260
    with pytest.raises(ConfigError, match="TRADING_PREDICTION_BUY_RATE_MIN_SAMPLES: min_samples"):
        read_knobs(PredictionKnobs, {"TRADING_PREDICTION_BUY_RATE_MIN_SAMPLES": "60"})


# The combiner's group (moved here from test_signals: the prediction service reads it).
SIGNAL_TABLE = [
    # (environment, expected field values or the start of the error)
    ({}, {"buy_threshold": 0.20, "weight_model": 0.50}),
    ({"TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0.3", "OTHER": "x"}, {"buy_threshold": 0.3}),
    (
        {"TRADING_PREDICTION_SIGNAL_WEIGHT_MODEL": "0", "TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA": "0.1"},
        {"weight_model": 0.0, "bear_buy_extra": 0.1},
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "abc"},
        "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD: 'abc' is not",
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "1.2"},
        "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD: buy_threshold must be in (0, 1)",
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0"},  # the open end of (0, 1)
        "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD: buy_threshold must be in (0, 1)",
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_BUY_THRESOLD": "0.3"},  # typo must not pass silently
        "TRADING_PREDICTION_SIGNAL_BUY_THRESOLD: no such knob",
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_MIN_QUALITY": "nan"},
        "TRADING_PREDICTION_SIGNAL_MIN_QUALITY: 'nan' is not a",
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_RSI_SPAN": "inf"},
        "TRADING_PREDICTION_SIGNAL_RSI_SPAN: rsi_span must be a finite number",
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_WEIGHT_MODEL": "-1"},
        "TRADING_PREDICTION_SIGNAL_WEIGHT_MODEL: weight_model",
    ),
    (
        {
            "TRADING_PREDICTION_SIGNAL_WEIGHT_MODEL": "0",
            "TRADING_PREDICTION_SIGNAL_WEIGHT_TECHNICAL": "0",
            "TRADING_PREDICTION_SIGNAL_WEIGHT_SENTIMENT": "0",
        },
        "must not all be zero",
    ),
    (
        {"TRADING_PREDICTION_SIGNAL_VOLUME_LOW": "2"},  # above the default volume_high (1.5)
        "TRADING_PREDICTION_SIGNAL_VOLUME_LOW: volume_low must be below volume_high",
    ),
]


@pytest.mark.parametrize(("env", "expected"), SIGNAL_TABLE)
def test_signal_settings_from_env(env, expected):
    if isinstance(expected, str):
        with pytest.raises(ConfigError) as raised:
            read_knobs(PredictionKnobs, env)
        assert expected in str(raised.value)
        return
    signal = read_knobs(PredictionKnobs, env).signal
    assert isinstance(signal, SignalConfig)
    for name, value in expected.items():
        assert getattr(signal, name) == pytest.approx(value)


def test_signal_defaults_are_the_domains():
    assert read_knobs(PredictionKnobs, {}).signal == SignalConfig()


# ---- one shape --------------------------------------------------------------------------------


def test_no_service_reads_a_knob_outside_its_dataclass():
    """The Settings accessors stay for one-off variables; every service knob is a dataclass field."""
    accessors = {"env_float", "env_int", "env_bool", "env_str"}
    offenders = []
    for path in sorted(SERVICES.rglob("*.py")):
        if path == SERVICES / "base" / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in accessors:
                offenders.append(f"{path.relative_to(SERVICES)}:{node.lineno} {node.attr}")
    assert not offenders, offenders
