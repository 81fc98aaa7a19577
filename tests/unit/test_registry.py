"""The registry (services/registry.py) against the code and the README, so neither can drift.

- The tables are consistent, every store they name imports, every entry file runs the service
  of that name, and every service opens the databases it is said to own.
- Every `publish("x", ...)` and `@on_event("x")` in services/ names a registered event, from a
  party the registry lists as its publisher or consumer; and every publisher and consumer the
  registry lists really publishes or handles it.
- README.md: the process table and the service sections, the Events table, and the knobs
  (`TRADING_*` names in the README exist in the code, and those the code reads are in the README).
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.domain.supervision import start_levels
from services.registry import (
    BUS_EVENTS,
    DASHBOARD,
    DEPENDENCIES,
    ENTRY_FILES,
    EVENTS,
    PARTIES,
    SERVICES,
    SUPERVISOR,
    Database,
    EventType,
    Service,
    databases,
    events_with,
    problems,
)

REPO = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO / "services"
README = (REPO / "README.md").read_text()

# ---- helpers: the source, as syntax trees ------------------------------------------------------


def python_files() -> list[Path]:
    return sorted(SERVICES_DIR.rglob("*.py"))


def party_of(path: Path) -> str | None:
    """Which party (service, supervisor, dashboard) a source file belongs to; None for shared code."""
    rel = path.relative_to(REPO).as_posix()
    for name, service in SERVICES.items():
        if rel.startswith(service.folder + "/"):
            return name
    if rel == "services/management/supervisor.py":
        return SUPERVISOR
    if path.name in ("dashboard.py", "dashboard_view.py"):  # the dashboard and its view-model
        return DASHBOARD
    return None


def files_of(party: str) -> list[Path]:
    return [p for p in python_files() if party_of(p) == party]


def string_constants(tree: ast.AST, *, docstrings: bool = True) -> set[str]:
    """Every string literal, f-strings' literal parts included; docstrings optionally left out."""
    skip: set[int] = set()
    if not docstrings:
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    skip.add(id(body[0].value))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    }


def event_calls(tree: ast.AST) -> Iterator[tuple[str, int, str | None, bool | None]]:
    """(kind, line, literal event type or None, durable flag or None) of each `.publish(...)` call
    and each `on_event(...)` decorator."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in ("publish", "on_event"):
            continue
        first = node.args[0]
        literal = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
        durable = next(
            (
                k.value.value
                for k in node.keywords
                if k.arg == "durable" and isinstance(k.value, ast.Constant)
            ),
            None,
        )
        if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            durable = node.args[1].value
        yield ("publish" if name == "publish" else "handles"), node.lineno, literal, durable


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


# ---- the tables themselves ---------------------------------------------------------------------


def test_the_tables_are_consistent():
    assert problems() == []
    start_levels(DEPENDENCIES)  # no cycle, no unknown dependency
    assert DEPENDENCIES == {name: s.depends_on for name, s in SERVICES.items()}
    assert ENTRY_FILES == {name: s.entry for name, s in SERVICES.items()}
    assert PARTIES == set(SERVICES) | {SUPERVISOR, DASHBOARD}


def test_problems_name_the_bad_row():
    bad_services = {
        "a": Service("a", "services/a/a.py", depends_on=("ghost",)),
        "b": Service("b", "services/a/a.py", databases=(Database("x.db", "nocolon"),)),
    }
    bad_events = {"e": EventType("e", publishers=(), consumers=("nobody",))}
    found = problems(bad_services, bad_events)
    assert "a depends on unknown service 'ghost'" in found
    assert "e: unknown consumer 'nobody'" in found
    assert "e has no publisher" in found
    assert "entry services/a/a.py is used twice" in found
    assert "b: store 'nocolon' is not 'module:Class'" in found


def test_extra_events_for_a_process_outside_the_suite_cannot_redefine_the_registry():
    demo = events_with(EventType("demo_x", publishers=("demo",)))
    assert set(demo) == set(EVENTS) | {"demo_x"}
    with pytest.raises(ValueError, match="already registered"):
        events_with(EventType("trade_executed", publishers=("demo",)))


def test_the_durable_events_are_those_that_move_money_or_state():
    durable = {name for name, e in EVENTS.items() if e.durable}
    assert durable == {"prediction_generated", "trade_executed", "position_closed"}


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_entry_file_runs_the_service_of_that_name(name):
    entry = REPO / SERVICES[name].entry
    assert entry.is_file(), entry
    names = {
        stmt.value.value
        for node in ast.walk(parse(entry))
        if isinstance(node, ast.ClassDef)
        for stmt in node.body
        if isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "name" for t in stmt.targets)
        and isinstance(stmt.value, ast.Constant)
    }
    assert names == {name}, f"{entry.name} defines service names {names}"


@pytest.mark.parametrize(("service", "database"), databases(), ids=lambda x: getattr(x, "file", x))
def test_each_database_store_imports_and_its_service_opens_that_file(service, database):
    store = getattr(importlib.import_module(database.module), database.class_name)
    assert callable(getattr(store, "close", None)), f"{database.store} has no close()"
    literals = set().union(*(string_constants(parse(p)) for p in files_of(service)))
    assert database.file in literals, f"{service} never names {database.file}"


def test_services_name_only_their_own_databases():
    owner = {db.file: service for service, db in databases()}
    for path in python_files():
        party = party_of(path)
        if party not in SERVICES:
            continue
        for literal in string_constants(parse(path)) & set(owner):
            assert owner[literal] == party, f"{path.relative_to(REPO)} opens {owner[literal]}'s {literal}"


# ---- events in the code ------------------------------------------------------------------------


def test_every_publish_and_handler_in_the_code_is_registered_for_its_party():
    wrong = []
    for path in python_files():
        party = party_of(path)
        where = path.relative_to(REPO)
        for kind, line, event_type, durable in event_calls(parse(path)):
            if event_type is None:
                continue  # a variable (the framework's own publish); checked the other way below
            if event_type in BUS_EVENTS and where.as_posix() == "services/base/events.py":
                continue  # the bus publishes it for whichever service runs it
            spec = EVENTS.get(event_type)
            if spec is None:
                wrong.append(f"{where}:{line} {kind} unregistered event {event_type!r}")
            elif kind == "publish" and party not in spec.publishers:
                wrong.append(f"{where}:{line} {party} publishes {event_type}; registry: {spec.publishers}")
            elif kind == "handles" and party not in spec.consumers:
                wrong.append(f"{where}:{line} {party} handles {event_type}; registry: {spec.consumers}")
            elif kind == "handles" and durable and not spec.durable:
                wrong.append(f"{where}:{line} durable handler of {event_type}, which is not durable")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("event", list(EVENTS))
def test_every_registered_publisher_and_consumer_really_does(event):
    spec = EVENTS[event]
    if event in BUS_EVENTS:  # the bus publishes it for any service: its own file must
        bus = parse(SERVICES_DIR / "base" / "events.py")
        assert event in string_constants(bus) and any(k == "publish" for k, *_ in event_calls(bus))
    for party in () if event in BUS_EVENTS else spec.publishers:
        # The scheduler picks task_completed or task_failed in a variable, so a publisher is
        # checked by the event's name among its literals and a publish call in the same files.
        trees = [parse(p) for p in files_of(party)]
        assert any(event in string_constants(t) for t in trees), f"{party} never names {event}"
        assert any(k == "publish" for t in trees for k, *_ in event_calls(t)), f"{party} publishes nothing"
    for party in spec.consumers:
        trees = [parse(p) for p in files_of(party)]
        if party == DASHBOARD:  # subscribes to consumed_by(DASHBOARD); its view shows each kind
            assert any(event in string_constants(t) for t in trees), f"the dashboard never shows {event}"
            continue
        handled = {e for t in trees for k, _, e, _ in event_calls(t) if k == "handles"}
        assert event in handled, f"{party} has no @on_event({event!r})"


# ---- README.md ---------------------------------------------------------------------------------


def readme_table(header: list[str]) -> list[list[str]]:
    """The rows of the README table whose header row is exactly `header`."""
    lines = README.splitlines()
    head = "| " + " | ".join(header) + " |"
    assert head in lines, f"README has no table {head}"
    rows = []
    for line in lines[lines.index(head) + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def names_in(cell: str) -> set[str]:
    """`a`, b (note) -> {"a", "b"}; "–" or a cell of only notes is empty."""
    cell = re.sub(r"\([^)]*\)", "", cell).replace("`", "")
    return {n.strip() for n in cell.split(",") if n.strip() and n.strip() not in ("–", "-")}


def test_readme_process_table_is_the_registry():
    rows = readme_table(["service", "entry file", "depends on", "databases (in `TRADING_DATA_DIR`)"])
    table = {row[0]: row for row in rows}
    assert list(table) == list(SERVICES)
    for name, (_, entry, deps, dbs) in table.items():
        service = SERVICES[name]
        assert entry == f"`{service.entry}`", name
        assert names_in(deps) - {"redis"} == set(service.depends_on), name
        assert names_in(dbs) == {db.file for db in service.databases}, name


def test_readme_has_one_section_per_service_with_its_entry_file():
    sections = dict(re.findall(r"^### ([a-z-]+) \(`(services/[^`]+\.py)`\)", README, re.MULTILINE))
    assert sections == dict(ENTRY_FILES)


def test_readme_events_table_is_the_registry():
    seen: dict[str, tuple[set[str], set[str], bool]] = {}
    for event_cell, published, consumed, durable in readme_table(
        ["event", "published by", "consumed by", "durable"]
    ):
        for event in re.findall(r"`([a-z_]+)`", event_cell):
            assert event not in seen, f"{event} is listed twice"
            seen[event] = (names_in(published), names_in(consumed), durable == "yes")
    assert set(seen) == set(EVENTS), "README events differ from the registry"
    for event, (published, consumed, durable) in seen.items():
        spec = EVENTS[event]
        assert published == set(spec.publishers), event
        assert consumed == set(spec.consumers), event
        assert durable == spec.durable, event


# ---- knobs -------------------------------------------------------------------------------------

#: Set by the suite for its own child processes, not by users: not documented as knobs.
INTERNAL = frozenset({"TRADING_CLOCK_EPOCH", "TRADING_SERVICE_NAME", "TRADING_SUPERVISED"})
KNOB = re.compile(r"TRADING_[A-Z0-9_]*[A-Z0-9]")
PREFIXES = sorted((f"TRADING_{p.upper().replace('-', '_')}_" for p in PARTIES), key=len, reverse=True)


def readme_knobs() -> tuple[set[str], list[re.Pattern]]:
    """Names in the README, with `_SUFFIX` shorthands expanded after the last full name of the
    same service (`TRADING_MARKET_DATA_CACHE_S` (300), `_RETRY_S` ...), and `<FIELD>` patterns."""
    names: set[str] = set()
    patterns: list[re.Pattern] = []
    prefix = None
    for match in re.finditer(
        r"TRADING_[A-Z0-9_]*(?:<[A-Z]+>[A-Z0-9_]*)+|TRADING_[A-Z0-9_]+|`(_[A-Z0-9_]+)`", README
    ):
        text = match.group(0)
        if "<" in text:
            if any(text.startswith(p) for p in PREFIXES):  # not the naming rule TRADING_<SERVICE>_...
                patterns.append(re.compile(re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", text) + "$"))
        elif match.group(1):
            assert prefix, f"README: {match.group(1)} follows no TRADING_<SERVICE>_ name"
            names.add(prefix + match.group(1)[1:])
        elif KNOB.fullmatch(text):
            names.add(text)
            prefix = next((p for p in PREFIXES if text.startswith(p)), None)
    return names, patterns


def code_knobs() -> tuple[set[str], list[re.Pattern]]:
    """Every knob the code reads: the services' knob dataclasses (services.base.knobs.all_knobs,
    names derived as TRADING_<SERVICE>_<FIELD>, `<FIELD>` families as patterns), plus the
    contract's variables, which config.py reads by their literal names (docstrings aside)."""
    from services.base.knobs import all_knobs

    full: set[str] = set()
    families: list[re.Pattern] = []
    for row in all_knobs():
        if "<" in row.env:
            families.append(re.compile(re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", row.env) + "$"))
        else:
            full.add(row.env)
    for path in python_files():
        for literal in string_constants(parse(path), docstrings=False):
            full.update(n for n in re.findall(r"TRADING_[A-Z0-9_]+", literal) if not n.endswith("_"))
    return full, families


def test_every_knob_in_the_readme_is_read_by_the_code():
    names, _ = readme_knobs()
    full, families = code_knobs()
    missing = sorted(n for n in names if n not in full and not any(f.match(n) for f in families))
    assert not missing, f"README names knobs the code never reads: {missing}"


def test_every_knob_the_code_reads_is_in_the_readme():
    names, patterns = readme_knobs()
    full, _ = code_knobs()
    undocumented = sorted(
        n for n in full - INTERNAL if n not in names and not any(p.match(n) for p in patterns)
    )
    assert not undocumented, f"knobs read by the code but not in README.md: {undocumented}"


def test_the_knob_scan_sees_the_shorthands_and_the_derived_names():
    names, patterns = readme_knobs()
    assert {"TRADING_MARKET_DATA_RETRY_S", "TRADING_PAPER_TRADING_SLIPPAGE_BPS"} <= names
    assert "TRADING_MANAGER_HANG_CHECKS" in names
    assert any(p.match("TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD") for p in patterns)
    assert len(patterns) == 2  # the two families; the naming rule TRADING_<SERVICE>_<KNOB> is none
    full, families = code_knobs()
    assert "TRADING_SERVICE_NAME" in full and "TRADING_PAPER_TRADING" not in full
    # derived from the dataclasses, not spelled anywhere in the code
    assert {"TRADING_PAPER_TRADING_SLIPPAGE_BPS", "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD"} <= full
    assert any(f.match("TRADING_MANAGER_ENTRY_MARKET_DATA") for f in families)
