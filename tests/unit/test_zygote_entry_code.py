"""The zygote takes an entry file's code from its bytecode cache when that matches the file, as an
import does (services/management/zygote.py: entry_code, Zygote.compiled)."""

from __future__ import annotations

import os
import py_compile
import socket
from importlib.util import cache_from_source
from pathlib import Path

from services.management.zygote import Zygote, entry_code


def run(code) -> dict:
    namespace: dict = {}
    exec(code, namespace)
    return namespace


def write_entry(path: Path, value: str) -> None:
    path.write_text(f'VALUE = "{value}"\n')


def test_a_valid_cache_is_used_and_a_changed_file_is_compiled_again(tmp_path: Path):
    entry = tmp_path / "some_service.py"
    write_entry(entry, "one")
    py_compile.compile(str(entry), doraise=True)  # what `python -m compileall` writes
    stat = entry.stat()
    # Same size, same time (as the cache records them): the cached code is what runs. This is
    # the rule every import follows; it shows the cache is read rather than the file compiled.
    write_entry(entry, "two")
    os.utime(entry, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code = entry_code(entry)
    assert run(code)["VALUE"] == "one"
    assert code.co_filename == str(entry)  # tracebacks name the file, wherever the cache was made
    # Another time: the file is compiled again.
    os.utime(entry, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert run(entry_code(entry))["VALUE"] == "two"


def test_without_a_cache_the_file_is_compiled(tmp_path: Path):
    entry = tmp_path / "other_service.py"
    write_entry(entry, "fresh")
    assert not Path(cache_from_source(str(entry))).exists()
    assert run(entry_code(entry))["VALUE"] == "fresh"
    script = tmp_path / "no_suffix"
    script.write_text('VALUE = "plain"\n')
    assert run(entry_code(script))["VALUE"] == "plain"


def test_a_broken_entry_is_left_to_the_child_to_report(tmp_path: Path):
    entry = tmp_path / "broken_service.py"
    entry.write_text("def (:\n")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        zygote = Zygote(ours)
        assert zygote.compiled(entry) is None
        assert zygote.compiled(tmp_path / "missing.py") is None
        write_entry(entry, "fixed")
        assert run(zygote.compiled(entry))["VALUE"] == "fixed"
