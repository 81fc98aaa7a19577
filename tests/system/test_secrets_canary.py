"""Secrets never leak (issue 19, item 4): the whole suite, started by the manager CLI with a
canary value in every secret variable and a password on its Redis, runs a prediction cycle and
answers every read RPC, the CLI's status, health, logs and metrics, and the gateway's routes.
Then every file the suite wrote (logs, SQLite databases and their WAL, anything else under its
directories), a dump of Redis, every reply and `/proc/<pid>/environ` and the command line of
every process must hold no canary, except the environment of the process that needs it. Then,
after a dozen services' restarts through the zygote, the whole memory of the zygote (none) and of
every service (its own only) is searched.

Some secrets come from TRADING_SECRETS_FILE (the supervisor reads it; the services get only
their values, never the file's name). The Redis is the test's own: redis-server with
`requirepass` from a 0600 config file (so the password is on no command line) on a private Unix
socket, TRADING_REDIS_URL carrying the password as `unix://:<password>@<socket>`. The outside
world is fake: MarketAux (its token is the canary: every news request carries it in the URL),
IG (takes the canary credentials) and the alert channels (dead local ports: the delivery-failure
path). The model converter runs once (the inference forms are removed from the models), and a
sitecustomize spy records its environment.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from services.base.config import SECRET_KEYS
from services.base.model_inference import INFERENCE_DIR
from services.clients.alert_channels.config import CHANNEL_NAMES
from services.gateway.gateway_routes import ROUTES
from services.registry import SERVICES
from tests.support import (
    Processes,
    SuiteDirs,
    install_models,
    manager_cli,
    raw_exchange,
    short_tempdir,
    suite_processes,
    wait_until,
)
from tests.system.test_manager import FAST_TIMERS
from tests.unit import _ig_helpers
from tests.unit._ig_helpers import FakeIg
from tests.unit._sentiment_helpers import FakeMarketaux, Scripted, article

pytestmark = pytest.mark.slow

SYMBOL = "CBA.AX"
# Each secret's canary: distinctive, long enough to be registered (and 16+ for the gateway token).
CANARIES = {key: f"cnry{i:02d}{secrets.token_hex(8)}" for i, key in enumerate(SECRET_KEYS)}
REDIS_PASSWORD = f"cnryredis{secrets.token_hex(8)}"
# Who may hold which canary in its environment (the rule; services.base.child_env has it).
IG = {"IG_API_KEY", "IG_USERNAME", "IG_PASSWORD", "IG_ACCOUNT_ID"}
ALERTS = {k for k in SECRET_KEYS if k.startswith("TRADING_ALERTS_")}
NEEDS = {
    "sentiment": {"MARKETAUX_API_TOKEN"},
    "market-data": IG,
    "paper-trading": IG,
    "alerts": ALERTS,
    "gateway": {"TRADING_GATEWAY_TOKEN"},
}
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, a delivery fails at once


#: Given in TRADING_SECRETS_FILE, not the environment: the supervisor reads the file and hands
#: each value to its service alone.
IN_FILE = ("MARKETAUX_API_TOKEN", "IG_PASSWORD", "TRADING_ALERTS_SMTP_PASSWORD")


def secret_values() -> dict[str, str]:
    env = dict(CANARIES)
    # The Slack secret is the webhook URL itself: the canary is its last part. Telegram's bot
    # token is <id>:<secret>: the canary is the secret part.
    env["TRADING_ALERTS_SLACK_WEBHOOK_URL"] = (
        f"{DEAD}/services/{CANARIES['TRADING_ALERTS_SLACK_WEBHOOK_URL']}"
    )
    env["TRADING_ALERTS_TELEGRAM_BOT_TOKEN"] = f"123456:{CANARIES['TRADING_ALERTS_TELEGRAM_BOT_TOKEN']}"
    return env


def secret_env(folder: Path) -> dict[str, str]:
    """The secrets' environment, with those of IN_FILE in a secrets file (mode 0600) in `folder`."""
    values = secret_values()
    path = folder / "secrets.env"
    path.write_text("".join(f"{key}={values.pop(key)}\n" for key in IN_FILE))
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return {**values, "TRADING_SECRETS_FILE": str(path)}


def found_in(data: bytes) -> set[str]:
    """The canaries (variable names; REDIS for the password) present in `data`."""
    hits = {key for key, value in CANARIES.items() if value.encode() in data}
    return hits | ({"REDIS"} if REDIS_PASSWORD.encode() in data else set())


# ---- the password-protected Redis ------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[Path]:
    root = short_tempdir("rc-")
    root.chmod(0o700)
    conf = root / "redis.conf"
    conf.write_text(
        textwrap.dedent(f"""\
            port 0
            unixsocket {root}/redis.sock
            unixsocketperm 700
            dir {root}
            logfile {root}/redis.log
            appendonly no
            save ""
            rdbcompression no
            requirepass {REDIS_PASSWORD}
            """)
    )
    conf.chmod(stat.S_IRUSR | stat.S_IWUSR)
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    proc = subprocess.Popen(
        [binary, str(conf)],
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock = root / "redis.sock"
    try:
        wait_until(lambda: redis_command(sock, "PING"), 10, what="the password-protected redis-server")
        assert redis_command(sock, "PING", password=None).startswith(b"-NOAUTH")  # the password is needed
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)


def redis_command(sock: Path, *words: str, password: str | None = REDIS_PASSWORD) -> bytes:
    """One command in RESP after AUTH; the raw answer (bytes), b"" when Redis does not answer."""

    def frame(*parts: str) -> bytes:
        return f"*{len(parts)}\r\n".encode() + b"".join(
            f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts
        )

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(sock))
            if password is not None:
                s.sendall(frame("AUTH", password))
                assert s.recv(64).startswith(b"+OK")
            s.sendall(frame(*words))
            return s.recv(1 << 16)
    except OSError:
        return b""


# ---- the suite ---------------------------------------------------------------------------------------


SPY = """\
import atexit, json, os, sys

def _record():
    if sys.argv and os.path.basename(sys.argv[0]) in ("model_converter.py", "train_models.py"):
        path = os.path.join(os.environ["CANARY_SPY_DIR"], f"{os.getpid()}.json")
        with open(path, "w") as out:
            json.dump({"argv": sys.argv, "environ": dict(os.environ)}, out)

atexit.register(_record)
"""


@dataclass
class Canary:
    dirs: SuiteDirs
    spied: Path  # the spy's records of the model converter's (and trainer's) environment
    marketaux: FakeMarketaux
    ig: FakeIg


@pytest.fixture(scope="module")
def canary_suite(locked_redis: Path, synthetic_models: Path) -> Iterator[Canary]:
    spy = short_tempdir("spy-")
    (spy / "sitecustomize.py").write_text(SPY)
    (spy / "seen").mkdir()
    news = [article("n1", "CBA beats", SYMBOL, datetime(2024, 6, 17, 23, 0, tzinfo=UTC), sentiment=0.4)]
    with Processes() as processes, FakeMarketaux(news, token=CANARIES["MARKETAUX_API_TOKEN"]) as marketaux:
        with FakeIg() as ig, pytest.MonkeyPatch.context() as patch:
            # The fake IG takes the canary credentials (and names the canary account): the
            # logged-in paths run, not only the refused login.
            for name in ("API_KEY", "USERNAME", "PASSWORD", "ACCOUNT_ID"):
                patch.setattr(_ig_helpers, name, CANARIES[f"IG_{name}"])
            marketaux.push(Scripted(503))  # the first news request fails: the retry path logs too
            dirs = processes.suite_dirs(
                "cn-",
                redis_url=f"unix://:{REDIS_PASSWORD}@{locked_redis}",
                **FAST_TIMERS,
                **secret_env(spy),
                TRADING_SYMBOLS=SYMBOL,
                TRADING_CLOCK_START="2024-06-18T11:00:00+10:00",  # in a session, whatever the time
                MARKETAUX_BASE_URL=marketaux.url,
                IG_BASE_URL=ig.url,
                TRADING_ALERTS_WEBHOOK_URL=f"{DEAD}/hook",
                TRADING_ALERTS_NTFY_URL=f"{DEAD}/desk",
                TRADING_ALERTS_TELEGRAM_CHAT_ID="42",
                TRADING_ALERTS_TELEGRAM_API_URL=DEAD,
                TRADING_ALERTS_SMTP_HOST="127.0.0.1",
                TRADING_ALERTS_SMTP_PORT="9",
                TRADING_ALERTS_SMTP_USERNAME="desk",
                TRADING_ALERTS_SMTP_FROM="desk@example.com",
                TRADING_ALERTS_SMTP_TO="ops@example.com",
                TRADING_ALERTS_RETRY_BASE_S="0.05",  # test_channel's three tries per channel, quickly
                NO_PROXY="127.0.0.1",
                no_proxy="127.0.0.1",
                CANARY_SPY_DIR=str(spy / "seen"),
            )
            dirs.env["PYTHONPATH"] = f"{dirs.env['PYTHONPATH']}:{spy}"
            install_models(synthetic_models, dirs.models_dir, [SYMBOL])
            shutil.rmtree(dirs.models_dir / INFERENCE_DIR)  # ml-model runs its converter at start
            processes.start_suite(dirs)
            yield Canary(dirs, spy / "seen", marketaux, ig)
    shutil.rmtree(spy, ignore_errors=True)


def rpc_raw(dirs: SuiteDirs, service: str, method: str, params: dict | None = None) -> bytes:
    frame: dict = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        frame["params"] = params
    return raw_exchange(dirs.socket(service), orjson.dumps(frame) + b"\n", timeout_s=60)


def result(reply: bytes) -> dict | list:
    answer = orjson.loads(reply)
    assert "result" in answer, answer
    return answer["result"]


#: Calls that write or act, made once for the paths they take (IG login, channel sends, fetches).
ACTIONS = [
    ("market-data", "refresh_all_data", None),
    ("sentiment", "refresh_sentiment_cache", None),
    ("prediction", "generate_predictions", {"force_refresh": True}),  # its result: asked again below
    ("paper-trading", "sync_with_ig_markets", None),
    ("paper-trading", "reconcile_ig", None),
    ("alerts", "test_channel", None),
]


def read_calls(dirs: SuiteDirs, replies: list[bytes]) -> None:
    """Every read method of every service (get_*, list_*, health, metrics, status), with the
    parameters it requires taken from what the suite holds."""
    predictions = result(rpc_raw(dirs, "prediction", "get_recent_predictions"))["predictions"]  # type: ignore[call-overload]
    tasks = result(rpc_raw(dirs, "scheduler", "list_tasks"))
    known = {
        "symbol": SYMBOL,
        "prediction_id": predictions[0]["prediction_id"] if predictions else "none",
        "task_id": tasks[0]["task_id"],  # type: ignore[index]
        "model_name": "random_forest",
    }
    for service in [*SERVICES, "manager"]:
        for method in result(rpc_raw(dirs, service, "list_methods")):  # type: ignore[union-attr]
            name = method["name"]
            if not (name.startswith(("get_", "list_")) or name in ("health", "metrics", "status")):
                continue
            needed = [p["name"] for p in method["params"] if p["required"]]
            if any(p not in known for p in needed):
                continue
            replies.append(rpc_raw(dirs, service, name, {p: known[p] for p in needed} or None))


def test_no_canary_outside_the_process_that_needs_it(canary_suite):
    dirs, spied = canary_suite.dirs, canary_suite.spied
    replies: list[bytes] = []
    for service, method, params in ACTIONS:
        replies.append(rpc_raw(dirs, service, method, params))

    def predict() -> dict:
        reply = rpc_raw(dirs, "prediction", "generate_predictions")
        replies.append(reply)
        return orjson.loads(reply)  # b"" (no answer in time) raises: asked again

    # The prediction cycle (asked again while ml-model's first load may still be converting).
    wait_until(
        predict,
        60,
        0.5,
        what="a prediction for CBA.AX",
        until=lambda reply: reply.get("result", {}).get("predictions"),
        ignoring=(orjson.JSONDecodeError,),
    )
    # The secrets were used: MarketAux was asked with the token, IG with the credentials.
    token = CANARIES["MARKETAUX_API_TOKEN"]
    assert any(r["params"].get("api_token") == token for r in canary_suite.marketaux.news_requests)
    assert any(r["path"] == "/session" for r in canary_suite.ig.state.requests), canary_suite.ig.paths()
    sent = result(replies[ACTIONS.index(("alerts", "test_channel", None))])["channels"]  # type: ignore[call-overload]
    assert set(sent) == set(CHANNEL_NAMES) and all(r["attempts"] for r in sent.values()), sent  # all tried
    read_calls(dirs, replies)
    for args in (["status"], ["health"], ["logs", "--lines", "2000"], ["metrics"], ["alerts", "list"]):
        done = manager_cli(dirs, *args)
        replies.append(f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}".encode())
    gateway = result(rpc_raw(dirs, "gateway", "get_url"))["url"]  # type: ignore[call-overload]
    headers = {"Authorization": f"Bearer {CANARIES['TRADING_GATEWAY_TOKEN']}"}
    with httpx.Client(base_url=gateway, headers=headers, timeout=60) as http:
        paths = [r.path for r in ROUTES if "{" not in r.path] + [
            "/healthz",
            "/metrics",
            f"/api/market/{SYMBOL}",
        ]
        for path in paths:
            answer = http.get(path)
            assert answer.status_code != 401, path
            replies.append(f"{path} {answer.status_code} {answer.headers}\n".encode() + answer.content)

    leaks: list[str] = []
    for reply in replies:
        if hits := found_in(reply):
            leaks.append(f"reply {reply[:200]!r}: {sorted(hits)}")

    # Redis: everything it holds, written to an uncompressed RDB and read back.
    assert redis_command(Path(locked_redis_path(dirs)), "SAVE").startswith(b"+OK")
    dump = Path(locked_redis_path(dirs)).with_name("dump.rdb").read_bytes()
    assert b"prediction_generated" in dump  # the dump is readable: the cycle's events are in it
    if hits := found_in(dump):
        leaks.append(f"redis dump: {sorted(hits)}")

    # Every file the suite wrote: logs (JSON and stdout), SQLite files and their WAL, the rest.
    files = [p for p in dirs.root.rglob("*") if p.is_file() and not p.is_socket()]
    assert any(p.suffix == ".db" for p in files) and any(p.name.endswith(".stdout.log") for p in files)
    for path in files:
        if hits := found_in(path.read_bytes()):
            leaks.append(f"{path.relative_to(dirs.root)}: {sorted(hits)}")
    redis_log = Path(locked_redis_path(dirs)).with_name("redis.log")
    if hits := found_in(redis_log.read_bytes()):
        leaks.append(f"redis.log: {sorted(hits)}")

    # Every process: the environment holds only what that process needs; no command line any.
    seen_services = set()
    for proc in suite_processes(dirs):
        try:
            environ, cmdline = proc.environ(), " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        # A service forked by the zygote (the default launch mode) shows the zygote's environment
        # (which holds no secret: its own secrets are set in its memory after the fork) and its
        # name as the process name; an exec'd one names itself in its environment.
        forked = proc.name() in SERVICES and "TRADING_SERVICE_NAME" not in environ
        name = environ.get("TRADING_SERVICE_NAME") or (
            proc.name() if forked else "manager" if "service_manager.py" in cmdline else cmdline
        )
        seen_services.add(name)
        allowed = set(SECRET_KEYS) | {"REDIS"} if name == "manager" else NEEDS.get(name, set()) | {"REDIS"}
        if hits := found_in(orjson.dumps(environ)) - allowed:
            leaks.append(f"environ of {name} (pid {proc.pid}): {sorted(hits)}")
        if hits := found_in(cmdline.encode()):
            leaks.append(f"command line of {name} (pid {proc.pid}): {sorted(hits)}")
        if name in NEEDS and not forked:  # the rule gives it what it needs (not merely nothing)
            assert NEEDS[name] <= found_in(orjson.dumps(environ)), name
        if name != "manager" and "TRADING_SECRETS_FILE" in environ:  # the file holds every secret
            leaks.append(f"environ of {name} (pid {proc.pid}): TRADING_SECRETS_FILE")
    assert set(SERVICES) | {"manager"} <= seen_services, seen_services
    redis_pid = int(
        redis_command(Path(locked_redis_path(dirs)), "INFO", "server").split(b"process_id:")[1].split()[0]
    )
    if hits := found_in(orjson.dumps(psutil.Process(redis_pid).environ())):
        leaks.append(f"environ of redis-server: {sorted(hits)}")

    # The model converter (short-lived): its environment as the spy recorded it at its exit.
    converted = [orjson.loads(p.read_bytes()) for p in spied.glob("*.json")]
    assert converted, "the model converter did not run"
    for record in converted:
        if hits := found_in(orjson.dumps(record)):
            leaks.append(f"environ of {os.path.basename(record['argv'][0])}: {sorted(hits)}")

    assert not leaks, "\n".join(leaks)


def locked_redis_path(dirs: SuiteDirs) -> str:
    """The Redis socket, from the suite's TRADING_REDIS_URL (unix://:<password>@<path>)."""
    return dirs.env["TRADING_REDIS_URL"].rpartition("@")[2]


# ---- the memory of the zygote and of every service ----------------------------------------------------


def process_memory(pid: int) -> Iterator[bytes]:
    """Every readable mapping of a process's memory (/proc/<pid>/maps, /proc/<pid>/mem: the test
    runs as the suite's user, or root)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps.read().splitlines():
            fields = line.split()
            if not fields[1].startswith("r") or fields[-1] in ("[vvar]", "[vvar_vclock]", "[vsyscall]"):
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):  # an unreadable guard or device page
                continue
            if data:
                yield data


def found_in_memory(pid: int) -> set[str]:
    """The canaries anywhere in a process's memory."""
    hits: set[str] = set()
    for data in process_memory(pid):
        hits |= found_in(data)
    return hits


#: Restarted one after another (each one a spawn request with its secrets), twice: the zygote serves
#: a request with every kind of secret before each service that must not hold it is forked again.
RESTARTED = ("sentiment", "paper-trading", "alerts", "gateway", "market-data", "scheduler")


def test_no_canary_in_the_memory_of_the_zygote_or_a_service_not_given_it(canary_suite):
    """The zygote forks every service with a copy of its own memory: a secret that passed through
    it (a spawn request parsed there and freed) would reach every service forked after. The zygote
    holds none (not even the Redis password); each service holds the ones it was given."""
    dirs = canary_suite.dirs
    status = result(rpc_raw(dirs, "manager", "status"))
    assert status["supervisor"]["launch"] == "zygote", status["supervisor"]  # type: ignore[call-overload]
    for _ in range(2):
        for service in RESTARTED:
            done = manager_cli(dirs, "restart", service)
            assert done.returncode == 0, f"restart {service}: {done.stdout}\n{done.stderr}"
    status = result(rpc_raw(dirs, "manager", "status"))
    zygotes = status["supervisor"]["zygote"]  # type: ignore[call-overload]
    assert zygotes, status["supervisor"]  # type: ignore[call-overload]
    pids = {s["name"]: s["pid"] for s in status["services"]}  # type: ignore[call-overload]
    assert set(pids) == set(SERVICES) and all(pids.values()), pids

    leaks: list[str] = []
    for pid in zygotes:
        if hits := found_in_memory(pid):
            leaks.append(f"memory of the zygote (pid {pid}): {sorted(hits)}")
    for name, pid in pids.items():
        assert psutil.Process(pid).ppid() in zygotes or name not in RESTARTED, f"{name} was not forked"
        held = found_in_memory(pid)
        if hits := held - NEEDS.get(name, set()) - {"REDIS"}:
            leaks.append(f"memory of {name} (pid {pid}): {sorted(hits)}")
        # It was given its own (the Redis password too: every service runs the event bus).
        assert NEEDS.get(name, set()) | {"REDIS"} <= held, (
            f"{name} lacks {NEEDS.get(name, set()) | {'REDIS'} - held}"
        )
    assert not leaks, "\n".join(leaks)
