#!/usr/bin/env python3
"""Set up the trading suite on this machine, then (with --full) run its test suite.

    python3 setup_microservices.py --full        everything below, then the check and the tests
    python3 setup_microservices.py --create-dirs --install-deps --init-db --models --test
    python3 setup_microservices.py --check       lint, format and types only (`make check`)

Each step is idempotent and quick when already done. Runs with the system python3 and the
standard library only: it creates `.venv/` and runs everything else inside it.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
REQUIREMENTS = REPO / "requirements.txt"
PYPROJECT = REPO / "pyproject.toml"
STAMP = VENV / ".requirements.sha256"


class SetupError(RuntimeError):
    """A step cannot be completed here; the message says what to run instead."""


def say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def in_virtualenv() -> bool:
    return sys.prefix != sys.base_prefix


def venv_python() -> Path:
    return Path(sys.executable) if in_virtualenv() else VENV / "bin" / "python"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(*packages: str) -> None:
    if not is_root() or shutil.which("apt-get") is None:
        raise SetupError(f"missing {' '.join(packages)}: run `sudo apt-get install -y {' '.join(packages)}`")
    say(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", *packages], env=env)


# ---- steps ----------------------------------------------------------------------------------


def socket_dir_rules():
    """services/base/socket_dir.py, loaded by path: it needs the standard library only, and the
    package (services.base) needs the virtual environment, which may not exist yet."""
    spec = importlib.util.spec_from_file_location("trading_socket_dir", REPO / "services/base/socket_dir.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settings_dirs() -> dict[str, Path]:
    """The directories the suite writes to, from the same variables the services read."""
    data = Path(os.environ.get("TRADING_DATA_DIR", REPO / "data"))
    log_default = Path("/var/log/trading")
    try:
        log_default.mkdir(parents=True, exist_ok=True)
        log_ok = os.access(log_default, os.W_OK)
    except OSError:
        log_ok = False
    return {
        "sockets": socket_dir_rules().default_socket_dir(os.environ),
        "logs": Path(os.environ.get("TRADING_LOG_DIR", log_default if log_ok else REPO / "logs")),
        "data": data,
        "market data": Path(os.environ.get("TRADING_MARKET_DATA_DIR", data / "market")),
        "backups": data / "backups",
        "models": Path(os.environ.get("TRADING_MODELS_DIR", REPO / "models")),
    }


def create_dirs() -> None:
    rules = socket_dir_rules()
    for label, path in settings_dirs().items():
        if label == "sockets":  # checked as the suite checks it: never chmod through a symlink
            try:
                rules.prepare_socket_dir(path)
            except rules.UnsafeSocketDir as exc:
                raise SetupError(str(exc)) from None
            continue
        path.mkdir(parents=True, exist_ok=True)
        if label == "models" and path.stat().st_uid == os.geteuid():
            # ml-model refuses a models folder that group or others may write (pickles run code)
            os.chmod(path, path.stat().st_mode & 0o755)
    say("directories ready")


def ensure_venv() -> None:
    if in_virtualenv() or (VENV / "bin" / "python").exists():
        return
    say(f"creating the virtual environment in {VENV}")
    try:
        run([sys.executable, "-m", "venv", str(VENV)])
    except subprocess.CalledProcessError:
        # Debian splits venv/ensurepip into its own package.
        shutil.rmtree(VENV, ignore_errors=True)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}-venv"
        apt_install(version)
        run([sys.executable, "-m", "venv", str(VENV)])


def install_deps() -> None:
    ensure_venv()
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + PYPROJECT.read_bytes()).hexdigest()
    stamp = STAMP if not in_virtualenv() else Path(sys.prefix) / ".requirements.sha256"
    if stamp.exists() and stamp.read_text().strip() == digest:
        say("requirements already installed")
    else:
        say("installing requirements.txt (first run takes a few minutes)")
        python = str(venv_python())
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", "pip"])
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)])
        install_import_root()
        stamp.write_text(digest + "\n")
    if not import_root_is_here():
        install_import_root()
    compile_bytecode()
    ensure_redis()


def compile_bytecode() -> None:
    """The suite's bytecode caches, written now: a process that starts without them compiles the
    files it imports (about 0.2 s of a cold start), and with PYTHONDONTWRITEBYTECODE set it never
    writes them. Only stale or missing caches are written (a second or two the first time). Then
    the zygote's cache of the code `@dataclass` generates (services/management/zygote.py
    DataclassCode: 50-100 ms of each cold start), written the same way."""
    run([str(venv_python()), "-m", "compileall", "-q", "-j", "0", str(REPO / "services")])
    cache = [str(venv_python()), "-m", "services.management.zygote", "--write-cache"]
    if subprocess.run(cache, cwd=REPO, stdout=subprocess.DEVNULL).returncode != 0:
        say("the zygote's dataclass cache was not written (see above): cold starts compile it instead")


def import_root_is_here() -> bool:
    """Whether the venv's python imports `services` from this repository (not another clone)."""
    probe = [str(venv_python()), "-c", "import services; print(services.__file__)"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    found = subprocess.run(probe, capture_output=True, text=True, cwd="/", env=env)
    return found.returncode == 0 and Path(found.stdout.strip()) == REPO / "services" / "__init__.py"


def install_import_root() -> None:
    """The repository itself, editable, so `services.*` imports from anywhere with the venv's python."""
    say("installing the repository into the virtual environment (editable)")
    pip = [str(venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, "--no-deps", "-e", str(REPO)])


def ensure_redis() -> None:
    if shutil.which("redis-server"):
        return
    apt_install("redis-server")
    if not shutil.which("redis-server"):
        raise SetupError("redis-server is still missing: run `sudo apt-get install -y redis-server`")


def ensure_test_browser() -> None:
    """Debian's chromium and its driver, for the web view's test in a real browser (the test set-up
    only: the suite itself never needs a browser)."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    apt_install("chromium", "chromium-driver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise SetupError("chromium is still missing: run `sudo apt-get install -y chromium chromium-driver`")


def init_db() -> None:
    """Create every service's SQLite database with its schema (the services also do this at start),
    and the gateway's token file."""
    create_dirs()
    run([str(venv_python()), str(REPO / "services" / "management" / "databases.py")], cwd=REPO)
    # The gateway's bearer token (unless TRADING_GATEWAY_TOKEN is given): <data dir>/gateway.token.
    run([str(venv_python()), "-m", "services.gateway.gateway_token"], cwd=REPO)


def ensure_models() -> None:
    """Train the default models when `models/` has none: on Yahoo's history when it answers, else
    on the CSVs in the market data folder, else on synthetic bars (labelled so)."""
    models = settings_dirs()["models"]
    if (models / "manifest.json").exists() or (models / "current").exists():
        say("models present")
        return
    trainer = REPO / "services" / "ml-model" / "train_models.py"
    if not trainer.exists():
        say("no training pipeline yet: skipping models")
        return
    market = settings_dirs()["market data"]
    # Yahoo first (the history goes into the market data folder, as `data fetch` does); offline,
    # the CSVs already there, else synthetic bars, which carry no signal: two years train quickly
    # and the manifest says synthetic.
    cmd = [str(venv_python()), str(trainer), "--out", str(models), "--data-dir", str(market)]
    cmd += ["--source", "yfinance", "--synthetic-years", "2"]
    say("training the default models: " + " ".join(cmd[1:]))
    run(cmd, cwd=REPO)


def venv_tool_python() -> str:
    """The venv's python, which runs the tools; a clear error before set-up made it."""
    python = venv_python()
    if not python.exists():
        raise SetupError("no virtual environment yet: run `python3 setup_microservices.py --install-deps`")
    return str(python)


def check_commands() -> list[list[str]]:
    """The check, defined here once: `make check`, the test step and CI all run these."""
    python = venv_tool_python()
    return [
        [python, "-m", "ruff", "check", "."],
        [python, "-m", "ruff", "format", "--check", "."],
        [python, "-m", "mypy"],  # the packages and options are in pyproject.toml
    ]


def run_check() -> int:
    """Run every check command (all of them, so one run shows every problem); 0 when all pass."""
    failed = 0
    for cmd in check_commands():
        say("checking: " + " ".join(cmd[2:]))
        code = subprocess.call(cmd, cwd=REPO)
        failed = failed or code
    return failed


#: pytest-xdist workers: most tests wait on real processes and sockets, so three workers on two
#: cores finish well before one (each test already passes beside two CPU-bound processes). Tests
#: of one module share a worker (module fixtures, e.g. a replay, run once). `-n 0` runs serially.
TEST_WORKERS = ["-n", "3", "--dist", "loadscope"]


def run_tests(extra: list[str]) -> int:
    say("running the test suite")
    workers = [] if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in extra) else TEST_WORKERS
    cmd = [venv_tool_python(), "-m", "pytest", *workers, "--durations=25", *extra]
    return subprocess.call(cmd, cwd=REPO)


# ---- systemd --------------------------------------------------------------------------------


def systemd_unit(system: bool | None = None) -> str:
    """The unit: a system unit when run as root (User= the installing user, even under sudo),
    else a user unit (no User=, and no network-online.target, which user managers cannot see)."""
    system = is_root() if system is None else system
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    network = "After=network-online.target\nWants=network-online.target\n" if system else ""
    user_line = f"User={user}\n" if system else ""
    return f"""[Unit]
Description=ASX trading research suite (supervisor and services)
Documentation=file://{REPO}/README.md
{network}# Give up after 5 failed starts in 10 minutes instead of looping forever; then tell a person.
StartLimitIntervalSec=600
StartLimitBurst=5
OnFailure={ALERT_UNIT}

[Service]
Type=notify
NotifyAccess=main
{user_line}WorkingDirectory={REPO}
# The sockets live in a directory systemd makes for this unit, owned by its user, mode 0700, and
# removes when it stops: /run/trading (system unit) or $XDG_RUNTIME_DIR/trading (user unit, the
# suite's own default there).
RuntimeDirectory={RUNTIME_DIR}
RuntimeDirectoryMode=0700
Environment=TRADING_SOCKET_DIR=%t/{RUNTIME_DIR}
# Optional KEY=VALUE settings (alert channels, TRADING_SECRETS_FILE, ...), shared with {ALERT_UNIT}.
EnvironmentFile=-{ENV_FILE}
ExecStart={REPO}/start_microservices.sh --foreground
ExecStop={VENV}/bin/python {REPO}/services/management/service_manager.py stop
Restart=on-failure
RestartSec=5
TimeoutStartSec=300
TimeoutStopSec=90
WatchdogSec=60
KillMode=mixed
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy={"multi-user.target" if system else "default.target"}
"""


ALERT_UNIT = "trading-suite-alert.service"
ENV_FILE = REPO / "trading.env"
#: RuntimeDirectory= of the unit: services/base/socket_dir.py RUNTIME_SUBDIR, so that a user unit
#: and the CLI in that user's session agree without setting anything.
RUNTIME_DIR = "trading"


def systemd_alert_unit(system: bool | None = None) -> str:
    """The unit the suite's OnFailure= starts: one alert through the configured channels, sent by
    the CLI without the alerts process (which failed with the rest)."""
    system = is_root() if system is None else system
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    user_line = f"User={user}\n" if system else ""
    cli = f"{VENV}/bin/python {REPO}/services/management/service_manager.py"
    return f"""[Unit]
Description=Alert a person that the ASX trading suite failed
Documentation=file://{REPO}/README.md

[Service]
Type=oneshot
{user_line}WorkingDirectory={REPO}
EnvironmentFile=-{ENV_FILE}
ExecStart={cli} alerts notify "trading-suite failed on %H: systemd gave up restarting it" --detail "journalctl -u trading-suite; then: systemctl restart trading-suite" --kind supervisor_down --severity critical
TimeoutStartSec=120
Environment=PYTHONUNBUFFERED=1
"""


#: Kernel same-page merging (README "Same-page merging (KSM)"): ksmd's switch, and the systemd-tmpfiles
#: entry that turns it on at each boot.
KSM_DIR = Path("/sys/kernel/mm/ksm")
KSM_TMPFILES = Path("/etc/tmpfiles.d/trading-suite-ksm.conf")
KSM_LINE = "w /sys/kernel/mm/ksm/run - - - - 1\n"


def enable_ksm(ksm_dir: Path = KSM_DIR, tmpfiles: Path = KSM_TMPFILES) -> str:
    """Turn the kernel's same-page merging on, now and at each boot (a systemd-tmpfiles entry),
    for the zygote mode to offer its memory to (TRADING_MANAGER_KSM=auto): the suite after a Big 4
    cycle ~105 MB PSS instead of ~141 (bench_suite.py --ksm), for ~2 % of a core while it idles.
    ksmd scans only memory a process offered, here the suite's own. Root only; what was done."""
    run_file = ksm_dir / "run"
    if not run_file.exists():
        return "this kernel has no KSM (no /sys/kernel/mm/ksm): the suite runs without it"
    tmpfiles.parent.mkdir(parents=True, exist_ok=True)
    tmpfiles.write_text(
        "# Kernel same-page merging for the ASX trading suite's zygote mode (README: Same-page merging).\n"
        "# Remove this file (and write 0 to /sys/kernel/mm/ksm/run) to turn it off.\n" + KSM_LINE
    )
    state = run_file.read_text().strip()
    if state == "0":
        run_file.write_text("1\n")
        return f"KSM on now and at each boot ({tmpfiles})"
    if state == "1":
        return f"KSM was already on; kept on at each boot ({tmpfiles})"
    return f"KSM left at run={state} (an administrator's setting) until the next boot ({tmpfiles})"


def install_systemd(ksm: bool = True) -> Path:
    if is_root():
        target = Path("/etc/systemd/system/trading-suite.service")
    else:
        target = Path.home() / ".config" / "systemd" / "user" / "trading-suite.service"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(systemd_unit())
    (target.parent / ALERT_UNIT).write_text(systemd_alert_unit())
    say(f"wrote {target.parent / ALERT_UNIT} (run by OnFailure=)")
    scope = "" if is_root() else " --user"
    say(f"wrote {target}")
    say(f"enable it with: systemctl{scope} daemon-reload && systemctl{scope} enable --now trading-suite")
    if is_root():
        say("its sockets are in /run/trading: run the CLI with TRADING_SOCKET_DIR=/run/trading")
        if ksm:
            say(enable_ksm())
    elif ksm:
        say(
            "KSM (about 35 MB less for the suite) needs root: echo 1 | sudo tee /sys/kernel/mm/ksm/run,"
            " or run this as root (README: Same-page merging)"
        )
    return target


# ---- main -----------------------------------------------------------------------------------


class OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        print(f"setup_microservices.py: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrors(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--full", action="store_true", help="every set-up step, then the check and the test suite"
    )
    parser.add_argument(
        "--create-dirs", action="store_true", help="create the data, log, socket and model dirs"
    )
    parser.add_argument(
        "--install-deps", action="store_true", help="virtual environment, requirements, redis-server"
    )
    parser.add_argument("--init-db", action="store_true", help="create the SQLite databases")
    parser.add_argument(
        "--models", action="store_true", help="train the default models when models/ has none"
    )
    parser.add_argument(
        "--check", action="store_true", help="ruff check, ruff format --check and mypy (make check)"
    )
    parser.add_argument("--test", action="store_true", help="the check, then the test suite (pytest)")
    parser.add_argument(
        "--install-systemd",
        action="store_true",
        help="write the systemd unit; as root, also turn on the kernel's same-page merging (KSM)",
    )
    parser.add_argument("--no-ksm", action="store_true", help="with --install-systemd: leave KSM as it is")
    parser.add_argument("--print-systemd", action="store_true", help="print the systemd unit")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = parser.parse_args(argv)
    steps = [args.create_dirs, args.install_deps, args.init_db, args.models, args.check, args.test]
    if not (args.full or any(steps) or args.install_systemd or args.print_systemd):
        print("setup_microservices.py: choose --full or at least one step (see --help)", file=sys.stderr)
        return 2
    try:
        if args.print_systemd:
            print(systemd_unit(), end="")
        if args.full or args.create_dirs:
            create_dirs()
        if args.full or args.install_deps:
            install_deps()
        if args.full or args.init_db:
            init_db()
        if args.full or args.models:
            ensure_models()
        if args.install_systemd:
            install_systemd(ksm=not args.no_ksm)
        checked = 0
        if args.full or args.check or args.test:  # the test step is the check, then pytest
            checked = run_check()
            say("check passed" if checked == 0 else f"check failed (exit {checked})")
        if args.full or args.test:
            ensure_test_browser()
            # The tests run even after a failed check, so one run reports both; either fails it.
            code = run_tests(args.pytest_args)
            say("tests passed" if code == 0 else f"tests failed (exit {code})")
            return checked or code
        if checked:
            return checked
    except SetupError as exc:
        print(f"setup_microservices.py: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(
            f"setup_microservices.py: step failed: {' '.join(map(str, exc.cmd))} (exit {exc.returncode})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
