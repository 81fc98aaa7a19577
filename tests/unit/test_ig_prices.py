"""IgQuoteSource against the local IG stand-in (real httpx, real sockets): quotes, bars, fallbacks."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.clients.ig_client import IgClient, IgCredentials
from services.clients.ig_prices import (
    AllowanceExhausted,
    IgQuoteSource,
    IgSourceUnavailable,
    NoEpic,
    wall_clock,
)
from services.domain.intraday import bar_end, quote_problem
from tests.unit._ig_helpers import API_KEY, PASSWORD, USERNAME, FakeIg, market_snapshot, price_point

SYDNEY = ZoneInfo("Australia/Sydney")
CBA, WBC = "AA.D.CBA.CASH.IP", "AA.D.WBC.CASH.IP"
EPICS = {"CBA.AX": CBA, "WBC.AX": WBC}


def syd(*args: int) -> datetime:
    return datetime(*args, tzinfo=SYDNEY)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def points(first: datetime, count: int, interval_min: int = 5, *, base: float = 100.0) -> list[dict]:
    """`count` IG points from `first` (Sydney), `interval_min` apart, rising 0.1 a bar, volume 1000+i."""
    return [
        price_point(
            first + timedelta(minutes=interval_min * i),
            base + i / 10,
            base + i / 10 + 0.3,
            base + i / 10 - 0.2,
            base + i / 10 + 0.1,
            volume=1000 + i,
        )
        for i in range(count)
    ]


@pytest.fixture
def ig():
    with FakeIg() as fake:
        yield fake


@pytest.fixture
async def source(ig):
    credentials = IgCredentials(API_KEY, USERNAME, PASSWORD, base_url=ig.url)
    sleeps, clock = Sleeps(), Monotonic()
    async with IgClient(credentials, sleep=sleeps, monotonic=clock, allowance_retry_s=900) as client:
        ig_source = IgQuoteSource(client, EPICS, live_clock=None)  # the tests' fixed days are "now"
        ig_source.client, ig_source.sleeps, ig_source.clock = client, sleeps, clock
        yield ig_source


def prices_queries(ig: FakeIg) -> list[dict]:
    return [r["query"] for r in ig.state.requests if r["path"].startswith("/prices/")]


def starts(bars) -> list[str]:
    return [b.start.astimezone(SYDNEY).strftime("%a %H:%M") for b in bars]


# -- quotes ----------------------------------------------------------------------------------------


async def test_a_quote_from_the_snapshot_with_the_sessions_open(ig, source):
    ig.state.markets[CBA] = market_snapshot(update_time="11:30:00")
    ig.state.price_points[(CBA, "HOUR")] = points(syd(2026, 3, 3, 10, 0), 2, 60, base=99.8)
    now = syd(2026, 3, 3, 11, 30, 20)
    quote = await source.quote("CBA.AX", now)
    assert (quote.symbol, quote.price, quote.bid, quote.ask, quote.source) == (
        "CBA.AX",
        100.01,
        100.0,
        100.02,
        "ig",
    )
    assert quote.quote_time == syd(2026, 3, 3, 11, 30, 0)
    assert (quote.day_high, quote.day_low, quote.previous_close) == (101.5, 99.2, 99.5)
    # the open of the session's first hourly bar (the hour in progress counts for the open)
    assert quote.day_open == 99.8
    # volume: the day's complete bars (10:00-11:00); the 11:00 bar is still in progress
    assert quote.volume == 1000
    assert quote_problem(quote, now) is None
    assert prices_queries(ig) == [{"resolution": "HOUR", "max": "2", "pageSize": "0", "pageNumber": "1"}]
    # the open is asked for once a session: the next quote costs no historical allowance
    ig.state.markets[CBA] = market_snapshot(update_time="11:31:00", bid=100.1, offer=100.12)
    later = await source.quote("CBA.AX", syd(2026, 3, 3, 11, 31, 5))
    assert (later.price, later.day_open) == (100.11, 99.8)
    assert len(prices_queries(ig)) == 1


async def test_a_quote_is_never_later_than_now(ig, source):
    ig.state.markets[CBA] = market_snapshot(update_time="11:32:00")  # IG's clock 2 min ahead of ours
    now = syd(2026, 3, 3, 11, 30, 0)
    quote = await source.quote("CBA.AX", now)
    assert quote.quote_time == now


async def test_a_quote_before_the_open_is_the_last_sessions_and_stale(ig, source):
    ig.state.markets[CBA] = market_snapshot(update_time="16:11:30", market_status="CLOSED", delay_time=20)
    quote = await source.quote("CBA.AX", syd(2026, 3, 2, 9, 0))  # Monday
    assert quote.quote_time == syd(2026, 2, 27, 16, 11, 30)  # Friday's
    assert (quote.stale, quote.stale_reason) == (True, "IG market status CLOSED")
    assert quote.delay_s == 1200
    # a past session's open is not looked for: the previous close stands in, volume 0
    assert (quote.day_open, quote.volume) == (99.5, 0)
    assert prices_queries(ig) == []


async def test_quotes_go_on_when_the_historical_allowance_is_used_up(ig, source):
    ig.state.markets[CBA] = market_snapshot()
    ig.state.allowance_remaining = 0
    now = syd(2026, 3, 3, 11, 30, 20)
    quote = await source.quote("CBA.AX", now)
    assert (quote.price, quote.day_open) == (100.01, 99.5)  # the open unknown: the previous close
    await source.quote("CBA.AX", now + timedelta(minutes=1))
    assert len(prices_queries(ig)) == 1  # asked once this session, not on every quote
    with pytest.raises(AllowanceExhausted) as raised:
        await source.intraday_bars("CBA.AX", "5m", 12, now)
    assert (raised.value.reason, raised.value.label, raised.value.resets_in_s) == (
        "allowance_exhausted",
        "ig allowance_exhausted",
        900,
    )
    assert isinstance(raised.value, IgSourceUnavailable)
    assert len(prices_queries(ig)) == 1  # the client knew: IG was not asked again
    assert source.allowance.remaining == 0


async def test_the_open_is_asked_for_again_while_ig_has_no_bar_of_the_session(ig, source):
    ig.state.markets[CBA] = market_snapshot(update_time="10:01:00")
    ig.state.price_points[(CBA, "HOUR")] = points(syd(2026, 3, 2, 15, 0), 1, 60, base=98)  # Monday's last
    quote = await source.quote("CBA.AX", syd(2026, 3, 3, 10, 1, 5))  # CBA's group opens about 10:02
    assert quote.day_open == 99.5  # not known yet: the previous close stands in
    await source.quote("CBA.AX", syd(2026, 3, 3, 10, 10))
    assert len(prices_queries(ig)) == 1  # not asked again within 15 minutes
    ig.state.price_points[(CBA, "HOUR")] += points(syd(2026, 3, 3, 10, 0), 1, 60, base=99.7)
    quote = await source.quote("CBA.AX", syd(2026, 3, 3, 10, 16, 5))
    assert quote.day_open == 99.7
    assert len(prices_queries(ig)) == 2


async def test_the_open_is_not_asked_for_again_when_ig_has_the_day_but_not_its_open(ig, source):
    ig.state.markets[CBA] = market_snapshot(update_time="11:30:00")
    ig.state.price_points[(CBA, "HOUR")] = points(syd(2026, 3, 3, 11, 0), 1, 60)  # no 10:00 bar
    for minute in (30, 50):
        await source.quote("CBA.AX", syd(2026, 3, 3, 11, minute, 5))
    await source.quote("CBA.AX", syd(2026, 3, 3, 12, 30))  # IG's hourly bars start at 11:00: no open
    assert len(prices_queries(ig)) == 1


async def test_the_day_open_and_volume_come_from_bars_already_held(ig, source):
    ig.state.markets[CBA] = market_snapshot(update_time="10:31:00")
    ig.state.price_points[(CBA, "MINUTE_5")] = points(syd(2026, 3, 3, 10, 0), 7)  # 10:00 ... 10:30
    now = syd(2026, 3, 3, 10, 31, 0)
    ig.state.price_points[(CBA, "HOUR")] = []  # IG has no hourly bar yet: the open is not found there
    await source.intraday_bars("CBA.AX", "5m", 12, now)
    quote = await source.quote("CBA.AX", now)
    assert quote.day_open == 100.0  # the first 5m bar's open
    assert quote.volume == sum(1000 + i for i in range(6))  # 10:00 ... 10:25, complete


async def test_an_unknown_symbol_says_so_without_asking_ig(ig, source):
    with pytest.raises(NoEpic) as raised:
        await source.quote("XYZ.AX", syd(2026, 3, 3, 11, 0))
    assert (raised.value.symbol, raised.value.reason, raised.value.label) == (
        "XYZ.AX",
        "no_epic",
        "ig no_epic",
    )
    assert isinstance(raised.value, IgSourceUnavailable) and isinstance(raised.value, LookupError)
    with pytest.raises(NoEpic):
        await source.intraday_bars("XYZ.AX", "5m", 12, syd(2026, 3, 3, 11, 0))
    assert ig.state.requests == []


async def test_an_expired_token_mid_call_is_answered_by_one_new_login(ig, source):
    ig.state.markets[CBA] = market_snapshot()
    ig.state.price_points[(CBA, "MINUTE_5")] = points(syd(2026, 3, 3, 10, 0), 19)
    now = syd(2026, 3, 3, 11, 31, 0)
    await source.intraday_bars("CBA.AX", "5m", 3, now)
    ig.state.expire_tokens()  # IG's weekend maintenance, or a session left idle too long
    quote = await source.quote("CBA.AX", now)
    assert quote.price == 100.01
    ig.state.expire_tokens()
    assert len(await source.intraday_bars("CBA.AX", "5m", 3, now + timedelta(minutes=5))) == 3
    assert source.client.logins == 3
    assert ig.paths().count("POST /session") == 3


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ({"server_errors": 1}, "server_error"),
        ({"rate_limited": 100}, "rate_limited"),  # after the client's backoff retries
        ({"reject_all_tokens": True}, "token_invalid"),
    ],
)
async def test_igs_failures_are_labelled_for_the_fallback(ig, source, script, reason):
    ig.state.markets[CBA] = market_snapshot()
    for name, value in script.items():
        setattr(ig.state, name, value)
    with pytest.raises(IgSourceUnavailable) as raised:
        await source.quote("CBA.AX", syd(2026, 3, 3, 11, 0))
    assert raised.value.reason == reason


async def test_an_epic_ig_does_not_know_is_a_refused_request(ig, source):
    with pytest.raises(IgSourceUnavailable) as raised:
        await source.quote("WBC.AX", syd(2026, 3, 3, 11, 0))  # mapped here, unknown to IG
    assert raised.value.reason == "request_refused"


async def test_bad_credentials_are_labelled(ig):
    credentials = IgCredentials(API_KEY, USERNAME, "wrong", base_url=ig.url)
    async with IgClient(credentials) as client:
        with pytest.raises(IgSourceUnavailable) as raised:
            await IgQuoteSource(client, EPICS, live_clock=None).quote("CBA.AX", syd(2026, 3, 3, 11, 0))
    assert raised.value.reason == "auth_failed"
    assert "wrong" not in str(raised.value)


async def test_a_snapshot_with_nothing_to_price_is_bad_data(ig, source):
    ig.state.markets[CBA] = market_snapshot(bid=None, offer=None)
    with pytest.raises(IgSourceUnavailable) as raised:
        await source.quote("CBA.AX", syd(2026, 3, 3, 11, 0))
    assert raised.value.reason == "bad_data"


# -- intraday bars ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "held_by_ig", "last_start"),
    [
        (syd(2026, 3, 3, 11, 31, 0), 19, "Tue 11:25"),  # IG has the 11:30 bar, in progress
        (syd(2026, 3, 3, 11, 30, 0), 19, "Tue 11:25"),  # the 11:25 bar ends at 11:30: visible from then
        (syd(2026, 3, 3, 11, 30, 0), 18, "Tue 11:25"),  # ... whether or not IG has opened the next
        (syd(2026, 3, 3, 11, 29, 59), 18, "Tue 11:20"),  # ... and not a second before
    ],
)
async def test_bars_are_only_those_ended_by_now(ig, source, now, held_by_ig, last_start):
    ig.state.price_points[(CBA, "MINUTE_5")] = points(syd(2026, 3, 3, 10, 0), held_by_ig)  # from 10:00
    bars = await source.intraday_bars("CBA.AX", "5m", 4, now)
    assert len(bars) == 4 and starts(bars)[-1] == last_start
    assert all(bar_end(b, "5m") <= now for b in bars)
    assert starts(bars) == sorted(starts(bars))  # oldest first


async def test_a_delayed_market_delays_its_bars_too(ig, source):
    ig.state.markets[CBA] = market_snapshot(delay_time=20)
    ig.state.price_points[(CBA, "HOUR")] = points(syd(2026, 3, 3, 10, 0), 2, 60)
    ig.state.price_points[(CBA, "MINUTE_5")] = points(syd(2026, 3, 3, 10, 0), 19)
    now = syd(2026, 3, 3, 11, 31, 0)
    await source.quote("CBA.AX", now)  # states the 20-minute delay
    bars = await source.intraday_bars("CBA.AX", "5m", 3, now)
    assert starts(bars) == ["Tue 10:55", "Tue 11:00", "Tue 11:05"]  # 11:05-11:10 + 20 min <= 11:31
    # asked for 3 shown, the one in progress and the 4 inside the 20 minutes
    assert prices_queries(ig)[-1]["max"] == str(3 + 1 + 4)


async def test_bars_are_asked_for_only_as_far_as_they_can_be_new(ig, source):
    ig.state.price_points[(CBA, "MINUTE_5")] = points(syd(2026, 3, 3, 10, 0), 19)  # 10:00 ... 11:30
    first = await source.intraday_bars("CBA.AX", "5m", 6, syd(2026, 3, 3, 11, 31))
    assert starts(first) == ["Tue 11:00", "Tue 11:05", "Tue 11:10", "Tue 11:15", "Tue 11:20", "Tue 11:25"]
    ig.state.price_points[(CBA, "MINUTE_5")] += points(syd(2026, 3, 3, 11, 35), 2, base=101.9)
    second = await source.intraday_bars("CBA.AX", "5m", 6, syd(2026, 3, 3, 11, 41))
    assert starts(second) == ["Tue 11:10", "Tue 11:15", "Tue 11:20", "Tue 11:25", "Tue 11:30", "Tue 11:35"]
    # the first: 6 + the one in progress; the second: 11:30, 11:35, 11:40 started since 11:25,
    # 11:25 again to check the join, and one more as margin
    assert [q["max"] for q in prices_queries(ig)] == ["7", "5"]
    assert ig.state.allowance_remaining == 10_000 - 7 - 5


async def test_a_gap_in_what_ig_answers_is_filled_by_one_full_request(ig, source):
    # Monday afternoon: 15:00 ... 15:55 (the 15:55 bar in progress at 15:58)
    monday = points(syd(2026, 3, 2, 15, 0), 12)
    ig.state.price_points[(CBA, "MINUTE_5")] = list(monday)
    first = await source.intraday_bars("CBA.AX", "5m", 6, syd(2026, 3, 2, 15, 58))
    assert starts(first)[-1] == "Mon 15:50"
    # Overnight IG adds the 15:55 bar, two after the close (closing auction prints) the session
    # count does not expect, and Tuesday's first bars: the short answer does not reach back.
    ig.state.price_points[(CBA, "MINUTE_5")] += [
        price_point(syd(2026, 3, 2, 16, 10), 101, 101, 101, 101),
        price_point(syd(2026, 3, 2, 16, 15), 101, 101, 101, 101),
        *points(syd(2026, 3, 3, 10, 0), 3, base=102),
    ]
    second = await source.intraday_bars("CBA.AX", "5m", 6, syd(2026, 3, 3, 10, 11))
    assert starts(second) == ["Mon 15:50", "Mon 15:55", "Mon 16:10", "Mon 16:15", "Tue 10:00", "Tue 10:05"]
    assert [q["max"] for q in prices_queries(ig)] == ["7", "6", "7"]


async def test_hourly_bars_and_an_early_close(ig, source):
    # Christmas Eve closes at 14:10: the 14:00 bar ends then, not at 15:00
    ig.state.price_points[(CBA, "HOUR")] = points(syd(2026, 12, 24, 10, 0), 5, 60)
    bars = await source.intraday_bars("CBA.AX", "60m", 10, syd(2026, 12, 24, 14, 10))
    assert starts(bars) == ["Thu 10:00", "Thu 11:00", "Thu 12:00", "Thu 13:00", "Thu 14:00"]
    assert prices_queries(ig)[-1]["resolution"] == "HOUR"


async def test_bars_at_igs_resolution_for_each_interval(ig, source):
    for resolution in ("MINUTE", "MINUTE_15", "MINUTE_30"):
        ig.state.price_points[(CBA, resolution)] = points(syd(2026, 3, 3, 10, 0), 2, 1)
    for interval in ("1m", "15m", "30m"):
        await source.intraday_bars("CBA.AX", interval, 1, syd(2026, 3, 3, 12, 0))
    assert [q["resolution"] for q in prices_queries(ig)] == ["MINUTE", "MINUTE_15", "MINUTE_30"]


@pytest.mark.parametrize(("interval", "limit", "message"), [("1h", 10, "interval"), ("5m", 0, "limit")])
async def test_bad_arguments_are_refused_before_asking_ig(ig, source, interval, limit, message):
    with pytest.raises(ValueError, match=message):
        await source.intraday_bars("CBA.AX", interval, limit, syd(2026, 3, 3, 11, 0))
    assert ig.state.requests == []


async def test_now_must_be_aware(source):
    with pytest.raises(ValueError, match="now"):
        await source.quote("CBA.AX", datetime(2026, 3, 3, 11, 0))
    with pytest.raises(ValueError, match="now"):
        await source.intraday_bars(
            "CBA.AX", "5m", 3, datetime(2026, 3, 3, 0, 0, tzinfo=UTC).replace(tzinfo=None)
        )


@pytest.mark.parametrize("off", [timedelta(minutes=-6), timedelta(minutes=6), timedelta(days=-60)])
async def test_ig_is_not_asked_about_any_moment_but_the_present(ig, source, off):
    """A replayed or sped-up clock would get today's prices stamped into another day: refused."""
    present = syd(2026, 3, 3, 11, 30)
    live = IgQuoteSource(source.client, EPICS, live_clock=lambda: present)
    ig.state.markets[CBA] = market_snapshot()
    with pytest.raises(IgSourceUnavailable) as raised:
        await live.quote("CBA.AX", present + off)
    assert raised.value.reason == "not_live"
    with pytest.raises(IgSourceUnavailable, match="not_live"):
        await live.intraday_bars("CBA.AX", "5m", 3, present + off)
    assert ig.state.requests == []
    assert (await live.quote("CBA.AX", present + timedelta(minutes=4))).price == 100.01  # within 5 min


def test_the_default_live_clock_is_the_wall_clock():
    assert abs((wall_clock() - datetime.now(UTC)).total_seconds()) < 5
