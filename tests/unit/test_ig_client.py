"""IgClient against a local server that speaks IG's REST API (real httpx, real sockets)."""

import logging
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from services.clients.ig_client import (
    BASE_URLS,
    HistoricalAllowance,
    IgAllowanceExhausted,
    IgAuthError,
    IgClient,
    IgCredentials,
    IgDealRejected,
    IgDealUnknown,
    IgRateLimited,
    IgRequestError,
    IgServerError,
    IgTokenInvalid,
    IgUnavailable,
    default_epic,
    reconcile,
)
from tests.unit._ig_helpers import (
    ACCOUNT_ID,
    API_KEY,
    EPIC_UNAVAILABLE,
    HISTORICAL_ALLOWANCE_EXCEEDED,
    PASSWORD,
    USERNAME,
    FakeIg,
    market_snapshot,
    price_point,
)

SECRETS = (API_KEY, PASSWORD)


class Sleeps:
    """Records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def ig():
    with FakeIg() as fake:
        yield fake


def creds(ig: FakeIg, **overrides) -> IgCredentials:
    values = {"api_key": API_KEY, "username": USERNAME, "password": PASSWORD, "base_url": ig.url} | overrides
    return IgCredentials(**values)


@pytest.fixture
async def client(ig):
    sleeps = Sleeps()
    async with IgClient(creds(ig), sleep=sleeps, backoff_s=2.0) as ig_client:
        ig_client.sleeps = sleeps
        yield ig_client


async def test_login_uses_v2_and_later_calls_carry_the_session_tokens(ig, client):
    accounts = await client.accounts()
    assert [a["accountId"] for a in accounts] == [ACCOUNT_ID, "XYZ987"]
    login, call = ig.state.requests
    assert (login["method"], login["path"], login["headers"]["Version"]) == ("POST", "/session", "2")
    assert login["headers"]["X-IG-API-KEY"] == API_KEY
    assert login["body"] == {"identifier": USERNAME, "password": PASSWORD}
    assert (call["headers"]["CST"], call["headers"]["X-SECURITY-TOKEN"]) == ("cst-1", "xst-1")
    assert call["headers"]["Version"] == "1"
    assert client.session["currentAccountId"] == ACCOUNT_ID


async def test_account_picks_the_current_account(client):
    account = await client.account()
    assert (account["accountId"], account["balance"]["balance"]) == (ACCOUNT_ID, 25_000.0)


async def test_account_honours_the_configured_id_and_says_when_it_is_missing(ig):
    async with IgClient(creds(ig, account_id="NOPE")) as client:
        with pytest.raises(Exception, match="NOPE"):
            await client.account()


async def test_positions_use_version_2(ig, client):
    ig.state.hold("AA.D.CBA.CASH.IP", 10.0, level=101.5)
    positions = await client.positions()
    assert positions[0]["position"]["size"] == 10.0
    assert positions[0]["market"]["epic"] == "AA.D.CBA.CASH.IP"
    assert ig.state.requests[-1]["headers"]["Version"] == "2"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"password": "wrong-password"}, "error.security.invalid-details"),
        ({"api_key": "bad-key"}, "error.security.api-key-invalid"),
    ],
)
async def test_refused_credentials_raise_auth_errors(ig, overrides, code):
    async with IgClient(creds(ig, **overrides)) as client:
        with pytest.raises(IgAuthError) as raised:
            await client.accounts()
    assert raised.value.error_code == code
    assert "wrong-password" not in str(raised.value) and "bad-key" not in str(raised.value)


async def test_an_expired_token_is_answered_by_one_new_login(ig, client):
    await client.accounts()
    ig.state.expire_tokens()  # what IG's weekend maintenance does
    assert len(await client.accounts()) == 2
    assert client.logins == 2
    assert ig.paths() == ["POST /session", "GET /accounts", "GET /accounts", "POST /session", "GET /accounts"]
    assert ig.state.requests[-1]["headers"]["CST"] == "cst-2"


async def test_a_token_still_invalid_after_relogin_is_an_error_not_a_loop(ig, client):
    ig.state.reject_all_tokens = True
    with pytest.raises(IgTokenInvalid):
        await client.accounts()
    assert client.logins == 2


async def test_rate_limits_back_off_exponentially_then_succeed(ig, client):
    await client.accounts()
    ig.state.rate_limited = 2
    assert len(await client.accounts()) == 2
    assert client.sleeps.delays == [2.0, 4.0]


async def test_rate_limits_that_persist_raise_after_the_retries(ig, client):
    await client.accounts()
    ig.state.rate_limited = 100
    with pytest.raises(IgRateLimited) as raised:
        await client.accounts()
    assert raised.value.error_code == "error.public-api.exceeded-account-trading-allowance"
    assert client.sleeps.delays == [2.0, 4.0, 8.0]  # 3 retries, then give up


async def test_a_rate_limited_login_backs_off_too(ig, client):
    ig.state.login_rate_limited = 1
    assert len(await client.accounts()) == 2
    assert client.sleeps.delays == [2.0]
    assert ig.paths() == ["POST /session", "POST /session", "GET /accounts"]


async def test_server_errors_are_typed(ig, client):
    await client.accounts()
    ig.state.server_errors = 1
    with pytest.raises(IgServerError) as raised:
        await client.positions()
    assert raised.value.status == 500


async def test_open_position_posts_otc_then_reads_the_confirm(ig, client):
    confirmation = await client.open_position(
        epic="AA.D.CBA.CASH.IP", direction="BUY", size=10, deal_reference="PT-1"
    )
    assert (confirmation.deal_status, confirmation.reason, confirmation.deal_reference) == (
        "ACCEPTED",
        "SUCCESS",
        "PT-1",
    )
    otc, confirm = ig.state.requests[-2:]
    assert (otc["path"], otc["headers"]["Version"]) == ("/positions/otc", "2")
    assert otc["body"] | {"size": None} == {
        "currencyCode": "AUD",
        "dealReference": "PT-1",
        "direction": "BUY",
        "epic": "AA.D.CBA.CASH.IP",
        "expiry": "-",
        "forceOpen": False,
        "guaranteedStop": False,
        "orderType": "MARKET",
        "size": None,
        "timeInForce": "FILL_OR_KILL",
        "trailingStop": False,
    }
    assert (confirm["path"], confirm["headers"]["Version"]) == ("/confirms/PT-1", "1")
    assert ig.state.sizes() == {"AA.D.CBA.CASH.IP": 10}


async def test_a_sell_nets_against_the_open_buy(ig, client):
    await client.open_position(epic="AA.D.CBA.CASH.IP", direction="BUY", size=10)
    await client.open_position(epic="AA.D.CBA.CASH.IP", direction="SELL", size=10)
    assert await client.positions() == []


async def test_a_rejected_deal_raises_with_igs_reason(ig, client):
    ig.state.reject_epics["AA.D.NAB.CASH.IP"] = "MARKET_CLOSED_WITH_EDITS"
    with pytest.raises(IgDealRejected) as raised:
        await client.open_position(epic="AA.D.NAB.CASH.IP", direction="BUY", size=5)
    assert raised.value.confirmation.reason == "MARKET_CLOSED_WITH_EDITS"
    assert raised.value.error_code == "MARKET_CLOSED_WITH_EDITS"
    assert ig.state.deals == []


async def test_a_confirm_not_ready_yet_is_retried(ig, client):
    ig.state.confirm_not_ready = 2
    confirmation = await client.open_position(epic="AA.D.WBC.CASH.IP", direction="BUY", size=1)
    assert confirmation.deal_status == "ACCEPTED"
    assert client.sleeps.delays == [1.0, 1.0]


@pytest.mark.parametrize(
    ("fault", "made"),
    [
        ("drop_after_deal", True),  # IG made it and the answer was lost with the connection
        ("delay_after_deal", True),  # IG made it and answered after the client gave up
        ("500_after_deal", True),
        ("drop_before_deal", False),
        ("500_before_deal", False),
    ],
)
async def test_an_ambiguous_deal_request_is_looked_up_never_resent(ig, fault, made):
    ig.state.otc_faults, ig.state.otc_delay_s = [fault], 1.0
    async with IgClient(creds(ig), timeout_s=0.5, sleep=Sleeps()) as client:
        await client.accounts()
        if made:
            confirmation = await client.open_position(
                epic="AA.D.CBA.CASH.IP", direction="BUY", size=10, deal_reference="PT-7"
            )
            assert (confirmation.deal_status, confirmation.deal_id) == ("ACCEPTED", "DIPT-7")
        else:
            with pytest.raises(IgDealUnknown) as raised:
                await client.open_position(
                    epic="AA.D.CBA.CASH.IP", direction="BUY", size=10, deal_reference="PT-7"
                )
            assert raised.value.deal_reference == "PT-7"
    assert ig.state.posted("PT-7") == 1
    after = ig.paths()[ig.paths().index("POST /positions/otc") :]
    if made:  # the confirm answers at once
        assert after == ["POST /positions/otc", "GET /confirms/PT-7"]
    else:  # the confirm, while IG says not found (5 tries), then the positions; nothing else
        assert after == ["POST /positions/otc"] + ["GET /confirms/PT-7"] * 5 + ["GET /positions"]
    assert ig.state.made == ({"PT-7": 1} if made else {})


async def test_a_made_deal_whose_confirm_is_gone_is_found_in_the_positions(ig, client):
    ig.state.otc_faults = ["drop_after_deal"]
    ig.state.lost_confirms = {"PT-8"}
    confirmation = await client.open_position(
        epic="AA.D.WBC.CASH.IP", direction="BUY", size=3, deal_reference="PT-8"
    )
    assert (confirmation.deal_id, confirmation.size, confirmation.reason) == (
        "DIPT-8",
        3,
        "FOUND_IN_POSITIONS",
    )
    assert ig.state.posted("PT-8") == 1


async def test_a_sent_deal_that_cannot_be_looked_up_is_unknown_not_an_error_of_the_lookup(ig, client):
    ig.state.lookup_errors = 100  # the deal is made; every confirm and positions read fails
    with pytest.raises(IgDealUnknown, match="sent, and looking it up failed") as raised:
        await client.open_position(epic="AA.D.WBC.CASH.IP", direction="BUY", size=3, deal_reference="PT-10")
    assert raised.value.deal_reference == "PT-10"
    assert ig.state.posted("PT-10") == 1 and ig.state.made == {"PT-10": 1}


async def test_a_login_failure_before_the_deal_is_not_taken_for_an_ambiguous_deal(ig, client):
    ig.state.login_rate_limited = 10  # the login never succeeds: the POST is never sent
    with pytest.raises(IgRateLimited) as raised:
        await client.open_position(epic="AA.D.WBC.CASH.IP", direction="BUY", size=3, deal_reference="PT-9")
    assert raised.value.path == "/session" and ig.state.posted("PT-9") == 0


@pytest.mark.parametrize(("direction", "size"), [("HOLD", 1), ("BUY", 0)])
async def test_open_position_validates_before_sending(ig, client, direction, size):
    with pytest.raises(ValueError):
        await client.open_position(epic="AA.D.WBC.CASH.IP", direction=direction, size=size)
    assert ig.state.requests == []


async def test_an_unreachable_ig_is_typed():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    unreachable = IgCredentials(API_KEY, USERNAME, PASSWORD, base_url=f"http://127.0.0.1:{port}")
    async with IgClient(unreachable, timeout_s=2) as client:
        with pytest.raises(IgUnavailable, match="unreachable"):
            await client.accounts()


async def test_secrets_never_reach_logs_errors_or_reprs(ig, caplog):
    caplog.set_level(logging.DEBUG)
    credentials = creds(ig)
    failures = []
    async with IgClient(credentials, sleep=Sleeps()) as client:
        await client.accounts()
        ig.state.expire_tokens()
        ig.state.rate_limited = 1
        await client.accounts()
        ig.state.reject_epics["AA.D.ANZ.CASH.IP"] = "INSUFFICIENT_FUNDS"
        with pytest.raises(IgDealRejected) as raised:
            await client.open_position(epic="AA.D.ANZ.CASH.IP", direction="BUY", size=1)
        failures.append(raised.value)
        text = " ".join(
            [caplog.text, repr(credentials), repr(client), *map(str, failures), *map(repr, failures)]
        )
    tokens = [t for pair in ig.state.tokens for t in pair]
    for secret in (*SECRETS, *tokens):
        assert secret not in text


def test_credentials_from_settings():
    lookup = {"IG_API_KEY": "k", "IG_USERNAME": "u", "IG_PASSWORD": "p"}.get
    credentials = IgCredentials.from_lookup(lookup)
    assert (credentials.acc_type, credentials.url) == ("DEMO", BASE_URLS["DEMO"])
    assert IgCredentials.from_lookup({"IG_API_KEY": "k"}.get) is None
    live = IgCredentials.from_lookup(
        {"IG_API_KEY": "k", "IG_USERNAME": "u", "IG_PASSWORD": "p", "IG_ACC_TYPE": "live"}.get
    )
    assert live.url == "https://api.ig.com/gateway/deal"


def test_credentials_validate():
    with pytest.raises(ValueError, match="acc_type"):
        IgCredentials("k", "u", "p", acc_type="PAPER")
    with pytest.raises(ValueError, match="password"):
        IgCredentials("k", "u", "")


def ig_position(epic: str, direction: str, size: float, *, v1: bool = False) -> dict:
    field = "dealSize" if v1 else "size"
    return {"position": {field: size, "direction": direction}, "market": {"epic": epic}}


@pytest.mark.parametrize(
    ("paper", "ig_positions", "in_sync", "differences"),
    [
        ({}, [], True, {}),
        ({"CBA.AX": 10}, [ig_position("AA.D.CBA.CASH.IP", "BUY", 10)], True, {"CBA.AX": 0}),
        ({"CBA.AX": 10}, [], False, {"CBA.AX": -10}),  # paper holds, IG does not
        # Two IG deals on one epic net out; v1's dealSize is read too.
        (
            {"CBA.AX": 4},
            [ig_position("AA.D.CBA.CASH.IP", "BUY", 10), ig_position("AA.D.CBA.CASH.IP", "SELL", 6, v1=True)],
            True,
            {"CBA.AX": 0},
        ),
        ({}, [ig_position("AA.D.WBC.CASH.IP", "BUY", 5)], False, {"WBC.AX": 5}),  # only on IG
        ({}, [ig_position("IX.D.ASX.IFT.IP", "BUY", 1)], False, {}),  # an epic we do not map
    ],
)
def test_reconcile(paper, ig_positions, in_sync, differences):
    epics = {s: default_epic(s) for s in ("CBA.AX", "WBC.AX")}
    report = reconcile(paper, ig_positions, epics)
    assert report["in_sync"] is in_sync
    assert {r["symbol"]: r["difference"] for r in report["positions"]} == differences


def test_unmapped_ig_positions_are_listed():
    report = reconcile({}, [ig_position("IX.D.ASX.IFT.IP", "SELL", 2)], {"CBA.AX": default_epic("CBA.AX")})
    assert report["unmapped_ig_positions"] == [{"epic": "IX.D.ASX.IFT.IP", "size": -2.0}]


def test_default_epic():
    assert default_epic("cba.ax") == "AA.D.CBA.CASH.IP"


# -- prices: GET /markets/{epic} and GET /prices/{epic} (Version 3) ----------------------------------

CBA = "AA.D.CBA.CASH.IP"


class Monotonic:
    """A hand-moved monotonic clock for the allowance's expiry."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def five_minute_points(count: int) -> list[dict]:
    first = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 10:00 Sydney (AEDT) on 3 March
    return [
        price_point(first + timedelta(minutes=5 * i), 100 + i, 100.5 + i, 99.5 + i, 100.2 + i)
        for i in range(count)
    ]


@pytest.fixture
async def priced(ig):
    """A client with a hand-moved monotonic clock, and IG holding CBA's snapshot and 5m bars."""
    ig.state.markets[CBA] = market_snapshot()
    ig.state.price_points[(CBA, "MINUTE_5")] = five_minute_points(6)
    sleeps, clock = Sleeps(), Monotonic()
    async with IgClient(creds(ig), sleep=sleeps, monotonic=clock, allowance_retry_s=900) as ig_client:
        ig_client.sleeps, ig_client.clock = sleeps, clock
        yield ig_client


async def test_market_reads_the_v3_snapshot_with_the_session_tokens(ig, priced):
    body = await priced.market(CBA)
    assert set(body) == {"instrument", "dealingRules", "snapshot"}
    assert (body["snapshot"]["bid"], body["snapshot"]["offer"], body["snapshot"]["updateTime"]) == (
        100.0,
        100.02,
        "11:30:00",
    )
    call = ig.state.requests[-1]
    assert (call["method"], call["path"], call["headers"]["Version"]) == ("GET", f"/markets/{CBA}", "3")
    assert (call["headers"]["CST"], call["headers"]["X-SECURITY-TOKEN"]) == ("cst-1", "xst-1")


async def test_an_epic_ig_does_not_know_is_a_request_error(priced):
    with pytest.raises(IgRequestError) as raised:
        await priced.market("AA.D.NOPE.CASH.IP")
    assert (raised.value.error_code, raised.value.status) == (EPIC_UNAVAILABLE, 404)


async def test_prices_ask_v3_for_the_latest_points_without_paging(ig, priced):
    body = await priced.prices(CBA, "MINUTE_5", 4)
    call = ig.state.requests[-1]
    assert (call["path"], call["headers"]["Version"]) == (f"/prices/{CBA}", "3")
    assert call["query"] == {"resolution": "MINUTE_5", "max": "4", "pageSize": "0", "pageNumber": "1"}
    # the latest four of six, oldest first, in IG's own shape
    assert [p["snapshotTimeUTC"] for p in body["prices"]] == [
        "2026-03-02T23:10:00",
        "2026-03-02T23:15:00",
        "2026-03-02T23:20:00",
        "2026-03-02T23:25:00",
    ]
    assert body["metadata"]["allowance"]["remainingAllowance"] == 10_000 - 4
    assert priced.historical_allowance == HistoricalAllowance(
        remaining=9_996, total=10_000, expiry_s=565_788, observed_at=1_000.0
    )


async def test_prices_follow_pages_when_ig_pages_anyway(ig, priced):
    ig.state.force_page_size = 2
    body = await priced.prices(CBA, "MINUTE_5", 5)
    assert [r["query"]["pageNumber"] for r in ig.state.requests if r["path"].startswith("/prices")] == [
        "1",
        "2",
        "3",
    ]
    assert [p["openPrice"]["bid"] for p in body["prices"]] == [100.99, 101.99, 102.99, 103.99, 104.99]


@pytest.mark.parametrize(
    ("resolution", "max_points"),
    [("5m", 10), ("MINUTE_5", 0), ("MINUTE_5", True), ("MINUTE_5", 2.0)],  # our names are not IG's
)
async def test_prices_validate_before_sending(ig, priced, resolution, max_points):
    with pytest.raises(ValueError):
        await priced.prices(CBA, resolution, max_points)
    assert ig.state.requests == []


async def test_an_expired_token_mid_prices_is_answered_by_one_new_login(ig, priced):
    await priced.market(CBA)
    ig.state.expire_tokens()
    assert len((await priced.prices(CBA, "MINUTE_5", 2))["prices"]) == 2
    assert priced.logins == 2
    assert ig.paths()[-3:] == [f"GET /prices/{CBA}", "POST /session", f"GET /prices/{CBA}"]


async def test_the_answer_that_uses_up_the_allowance_is_kept_and_the_next_call_refused(ig, priced):
    ig.state.allowance_remaining = 3
    assert len((await priced.prices(CBA, "MINUTE_5", 3))["prices"]) == 3  # paid for: returned
    asked = len(ig.state.requests)
    priced.clock.now += 100
    with pytest.raises(IgAllowanceExhausted) as raised:
        await priced.prices(CBA, "MINUTE_5", 3)
    assert len(ig.state.requests) == asked  # refused here: IG is not asked again
    assert isinstance(raised.value, IgRateLimited)  # callers that handle rate limits handle this too
    assert raised.value.resets_in_s == 565_788 - 100
    assert raised.value.error_code == HISTORICAL_ALLOWANCE_EXCEEDED
    assert priced.sleeps.delays == []  # a weekly allowance is not waited out
    # once the period is over, IG is asked again (and here it has reset the allowance)
    priced.clock.now += 565_788
    ig.state.allowance_remaining = 10_000
    assert len((await priced.prices(CBA, "MINUTE_5", 2))["prices"]) == 2


async def test_igs_exceeded_allowance_error_is_raised_at_once_and_held_back_for_a_while(ig, priced):
    ig.state.allowance_remaining = 0
    with pytest.raises(IgAllowanceExhausted) as raised:
        await priced.prices(CBA, "MINUTE_5", 3)
    assert raised.value.status == 403
    assert raised.value.resets_in_s == 900  # no answer ever said when: probe again in 15 min
    assert priced.sleeps.delays == []
    assert ig.paths().count(f"GET /prices/{CBA}") == 1
    priced.clock.now += 899
    with pytest.raises(IgAllowanceExhausted):
        await priced.prices(CBA, "MINUTE_5", 3)
    assert ig.paths().count(f"GET /prices/{CBA}") == 1
    priced.clock.now += 1
    ig.state.allowance_remaining = 50
    assert len((await priced.prices(CBA, "MINUTE_5", 3))["prices"]) == 3


async def test_an_exceeded_error_after_a_known_allowance_waits_for_its_expiry(ig, priced):
    await priced.prices(CBA, "MINUTE_5", 1)  # IG states the expiry: 565,788 s
    ig.state.allowance_remaining = 0  # someone else (another process on this key) used it up
    priced.clock.now += 788
    with pytest.raises(IgAllowanceExhausted) as raised:
        await priced.prices(CBA, "MINUTE_5", 1)
    assert raised.value.resets_in_s == 565_000
    assert priced.historical_allowance.remaining == 0


async def test_an_answer_sent_before_the_allowance_ran_out_does_not_bring_it_back(priced, monkeypatch):
    """Two /prices calls in flight: the later one is refused (used up); the earlier one's answer,
    stating 9,994 left, arrives after. The refusal is the newer news and stands."""
    import asyncio

    released = asyncio.Event()
    answers = [
        {
            "prices": five_minute_points(1),
            "metadata": {
                "allowance": {
                    "remainingAllowance": 9_994,
                    "totalAllowance": 10_000,
                    "allowanceExpiry": 565_788,
                }
            },
        },
        IgAllowanceExhausted("used up", status=403, error_code=HISTORICAL_ALLOWANCE_EXCEEDED),
    ]

    async def call(method, path, **kwargs):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        await released.wait()
        return answer

    monkeypatch.setattr(priced, "_call", call)
    earlier = asyncio.create_task(priced.prices(CBA, "MINUTE_5", 1))
    await asyncio.sleep(0)  # the earlier call is sent and waits for its answer
    with pytest.raises(IgAllowanceExhausted):
        await priced.prices(CBA, "MINUTE_5", 1)
    released.set()
    assert len((await earlier)["prices"]) == 1  # its prices are still good
    assert priced.historical_allowance.remaining == 0
    with pytest.raises(IgAllowanceExhausted):  # and further calls are refused here
        await priced.prices(CBA, "MINUTE_5", 1)


async def test_the_snapshot_does_not_draw_on_the_historical_allowance(ig, priced):
    ig.state.allowance_remaining = 0
    with pytest.raises(IgAllowanceExhausted):
        await priced.prices(CBA, "MINUTE_5", 1)
    assert (await priced.market(CBA))["snapshot"]["marketStatus"] == "TRADEABLE"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (
            {"allowance": {"remainingAllowance": 9952, "totalAllowance": 10000, "allowanceExpiry": 565788}},
            HistoricalAllowance(9952, 10000, 565788.0, 5.0),
        ),  # trading-ig's historic_prices_num_points.json
        ({}, None),  # no allowance stated: nothing kept, the last one stands
        ({"allowance": {"remainingAllowance": 1}}, None),  # incomplete
        ({"allowance": {"remainingAllowance": "x", "totalAllowance": 1, "allowanceExpiry": 1}}, None),
    ],
)
def test_allowance_from_metadata(metadata, expected):
    assert HistoricalAllowance.from_metadata(metadata, observed_at=5.0) == expected


def test_allowance_expiry_arithmetic():
    allowance = HistoricalAllowance(remaining=0, total=10_000, expiry_s=60, observed_at=100.0)
    assert (allowance.resets_in_s(130.0), allowance.exhausted(130.0)) == (30.0, True)
    assert (allowance.resets_in_s(160.0), allowance.exhausted(160.0)) == (0.0, False)  # reset by now
    assert not HistoricalAllowance(1, 10_000, 60, 100.0).exhausted(130.0)


def test_importing_the_client_does_not_load_httpx():
    # market-data and paper-trading import the client to ask whether IG is configured; httpx and
    # its stack (megabytes a process) load only when a client is built.
    code = (
        "import sys; import services.market_data.market_data_service, services.paper_trading.paper_trading_service;"
        "print('httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
