"""The web view in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by Selenium) loads the gateway's page against a running suite whose clock is in a trading
session, logs in with the token, checks the panels (the equity curve drawn as SVG, a replay report's
PNG fetched with the token into a blob: URL), follows a trade to its prediction and inputs, saves
screenshots at 1280x800 and 390x844 (the window, and the whole page through Chrome's DevTools
protocol), and sees a stopped service shown as down."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from tests.support import Processes, manager_cli, png_bytes, rpc_call_sync, wait_until
from tests.system.test_manager import FAST_TIMERS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]

TOKEN = "web-view-token-0123456789"
# A Wednesday mid-session: the synthetic desk makes a BUY that paper-trading trades (an ANZ.AX
# signal at this instant), so there is a trade with a prediction to follow.
SESSION = "2026-11-25T11:00:00+11:00"
REPLAY = "2019-06-03_2019-06-28"


@pytest.fixture(scope="module")
def desk():
    with Processes() as processes:
        dirs = processes.suite_dirs(
            "tw-", **FAST_TIMERS, TRADING_GATEWAY_TOKEN=TOKEN, TRADING_CLOCK_START=SESSION,
            TRADING_GATEWAY_RATE_BURST="100000",
        )  # fmt: skip
        processes.start_suite(dirs)
        rpc_call_sync(dirs.socket("prediction"), "generate_predictions", {"symbols": None}, timeout_s=120)
        wait_until(
            lambda: [
                t for t in rpc_call_sync(dirs.socket("paper-trading"), "get_trade_history", {})["trades"]
                if t["prediction_id"]
            ],
            60,
            what="a trade that follows a prediction",
        )  # fmt: skip
        folder = dirs.data_dir / "replays" / REPLAY  # as `service_manager.py replay` leaves one
        folder.mkdir(parents=True)
        (folder / "report.json").write_text('{"basis": "daily bars", "degraded_predictions": 0}')
        (folder / "report.txt").write_text("report\n")
        (folder / "equity.png").write_bytes(png_bytes(320, 160, (31, 111, 235)))
        yield dirs


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def text_of(browser, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector).text


def save_screenshots(browser, folder: Path, size: str) -> None:
    """The window as the user sees it, and the whole page (every panel) through DevTools."""
    browser.save_screenshot(str(folder / f"desk-{size}.png"))
    width, height = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    (folder / f"desk-{size}-full.png").write_bytes(base64.b64decode(shot["data"]))
    for name in (f"desk-{size}.png", f"desk-{size}-full.png"):
        assert (folder / name).stat().st_size > 10_000, name


def new_panels_shown(browser) -> None:
    """The equity curve as SVG and the replay's PNG loaded from a blob: URL (fetched with the token)."""
    from selenium.webdriver.common.by import By

    wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#equity svg.chart polyline"),
        30,
        what="the equity curve",
    )
    assert "now" in text_of(browser, "#equity") and "$" in text_of(browser, "#equity")
    image = wait_until(
        lambda: browser.execute_script(
            "const i = document.querySelector('#replays img.replay-png');"
            "return i && i.complete && i.naturalWidth ? [i.src, i.naturalWidth] : null"
        ),
        30,
        what="the replay's PNG shown",
    )
    assert image[0].startswith("blob:") and image[1] == 320  # never the token in a URL
    assert REPLAY in text_of(browser, "#replays") and "equity.png" in text_of(browser, "#replays")


def log_in(browser) -> None:
    """The login form (shown while this tab holds no token) given the token."""
    from selenium.webdriver.common.by import By

    wait_until(lambda: browser.find_element(By.ID, "login").is_displayed(), 30, what="the login form")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()


def test_the_page_shows_the_desk_and_follows_a_trade_to_its_prediction(desk, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By

    url = rpc_call_sync(desk.socket("gateway"), "get_url")["url"]
    browser.set_window_size(1280, 800)
    browser.get(url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/")
    log_in(browser)

    wait_until(lambda: "paper-trading" in text_of(browser, "#health"), 60, what="the health panel")
    assert "running" in text_of(browser, "#health")
    assert not browser.find_element(By.ID, "login").is_displayed()  # the form gives way to the desk
    symbols = wait_until(
        lambda: text_of(browser, "#symbols"), 60, what="signals per symbol",
        until=lambda text: all(s in text for s in ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")) and "BUY" in text,
    )  # fmt: skip
    assert "HOLD" in symbols or "SELL" in symbols
    # Each symbol's row: a price, and a confidence beside each signal (as the dashboard's table).
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#symbols tr')].slice(1)"
        ".map((r) => [...r.cells].map((c) => c.textContent))"
    )
    assert len(rows) == 4 and all(float(price) > 0 for _, price, *_ in rows), rows
    assert all(confidence.endswith("%") for *_, signal, confidence in rows if signal in ("BUY", "SELL")), rows
    assert "open" in text_of(browser, "#market")  # the clock is mid-session
    wait_until(lambda: "equity" in text_of(browser, "#portfolio"), 30, what="the portfolio")
    assert "ANZ.AX" in text_of(browser, "#portfolio")  # the position the BUY opened
    wait_until(lambda: "market_monitoring" in text_of(browser, "#tasks"), 30, what="the next tasks")
    link = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#trades a.prediction-link"), 30, what="a trade's link"
    )[0]
    new_panels_shown(browser)
    save_screenshots(browser, tmp_path, "1280x800")
    link.click()
    prediction = wait_until(
        lambda: text_of(browser, "#prediction"), 30, what="the prediction and its inputs",
        until=lambda text: "BUY" in text and "thresholds" in text,
    )  # fmt: skip
    assert "ANZ.AX" in prediction
    browser.set_window_size(390, 844)
    wait_until(
        lambda: browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"),
        30,
        what="the page fits a phone's width",
    )
    new_panels_shown(browser)
    chart_width = browser.execute_script(
        "return document.querySelector('#equity svg').getBoundingClientRect().width"
    )
    assert 0 < chart_width <= 390
    save_screenshots(browser, tmp_path, "390x844")
    print(f"screenshots in {tmp_path}")


def test_a_stopped_service_shows_down_and_the_page_goes_on(desk, browser):
    """Also the page's own refresh: alerts stops after its panel was drawn, and the page shows it
    down on its next poll."""
    url = rpc_call_sync(desk.socket("gateway"), "get_url")["url"]
    browser.set_window_size(1280, 800)
    browser.get(url + "/")
    if not browser.execute_script("return sessionStorage.getItem('gateway-token')"):
        log_in(browser)  # run alone: the other test did not log this tab in
    wait_until(lambda: "paper-trading" in text_of(browser, "#health"), 60, what="the health panel")
    # The alerts panel drawn while alerts runs; the page then sees it stop without being reloaded.
    wait_until(
        lambda: text_of(browser, "#alerts"), 30, what="the alerts panel drawn",
        until=lambda text: text and "down" not in text,
    )  # fmt: skip
    assert manager_cli(desk, "stop", "alerts").returncode == 0
    try:
        wait_until(lambda: "alerts down" in text_of(browser, "#alerts"), 60, what="alerts shown down")
        assert "equity" in text_of(browser, "#portfolio")
    finally:
        assert manager_cli(desk, "start", "alerts").returncode == 0
