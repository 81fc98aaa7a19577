"""What the zygote preloads and how it notices changed code (services/management/zygote.py); the
zygote with real services is tested in tests/system/test_zygote.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from services.management import zygote
from tests.support import REPO


def test_entry_imports_are_the_top_level_ones(tmp_path: Path):
    entry = tmp_path / "entry.py"
    entry.write_text(
        "import os, json as j\n"
        "from services.base import BaseService\n"
        "from . import relative_is_skipped\n"
        "def f():\n    import pandas  # lazy: not preloaded\n"
        "if True:\n    import nested_is_skipped\n"
    )
    assert zygote.entry_imports(entry) == [
        "os",
        "json",
        "services.base",
        "services.base.BaseService",  # may be a submodule: tried, an ImportError is ignored
    ]
    assert zygote.entry_imports(tmp_path / "missing.py") == []


def test_imports_read_from_the_code_are_the_ones_of_the_source():
    """entry_imports reads the compiled code (faster on the cold start's path); the syntax tree's
    top-level statements are what it stands for: the same list for every file the zygote reads."""
    files = [*zygote.entries_of_suite(), REPO / "services/management/manager_cli.py"]
    for file in files:
        assert zygote.entry_imports(file) == zygote.source_imports(file), file
    assert len(files) == 9  # the eight services' and the supervisor's


def test_nested_and_unusual_imports_read_from_code(tmp_path: Path):
    entry = tmp_path / "unusual.py"
    entry.write_text(
        "import os.path as p\n"
        "from json import *\n"
        "try:\n    import tomllib\nexcept ImportError:\n    pass\n"
        "if __name__ == '__main__':\n    import csv\n"
        "from collections import (\n    deque,\n    OrderedDict,\n)\n"
    )
    assert (
        zygote.entry_imports(entry)
        == zygote.source_imports(entry)
        == [
            "os.path",
            "json",
            "json.*",
            "collections",
            "collections.deque",
            "collections.OrderedDict",
        ]
    )


def test_code_without_column_positions_is_read_from_the_source():
    """`-X no_debug_ranges` compiles without columns: the imports then come from the source."""
    script = (
        "from pathlib import Path; from services.management import zygote; "
        "f = Path('services/management/manager_cli.py'); "
        "print(zygote.entry_imports(f, compile(f.read_bytes(), str(f), 'exec')) == zygote.source_imports(f))"
    )
    done = subprocess.run(
        [sys.executable, "-X", "no_debug_ranges", "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "True", done.stderr


def test_preload_names_leave_out_the_heavy_packages(tmp_path: Path):
    entry = tmp_path / "entry.py"
    entry.write_text(
        "from __future__ import annotations\nimport pandas\nimport numpy.linalg\nimport orjson\n"
    )
    names = zygote.preload_names([entry])
    assert "pandas" not in names and "numpy.linalg" not in names and "__future__" not in names
    assert names[0] == "orjson" and "redis.asyncio" in names  # the lazy ones follow
    assert len(names) == len(set(names))


def test_changed_files_by_modification_time(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("A = 1\n")
    files = {str(module): module.stat().st_mtime_ns, str(tmp_path / "gone.py"): 5}
    assert zygote.changed_files(files) == [str(tmp_path / "gone.py")]
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert zygote.changed_files(files) == [str(module), str(tmp_path / "gone.py")]


@pytest.mark.parametrize(
    "code, status",
    [(None, 0), (0, 0), (78, 78), (256 + 3, 3), ("a message", 1)],  # as the interpreter exits
)
def test_exit_status_of_system_exit(code, status):
    assert zygote._exit_status(code) == status


def last_json_line(script: str) -> dict:
    """Run `script` in a fresh interpreter of this checkout; the JSON object it printed last."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def test_preloading_the_suite_starts_no_thread_and_keeps_heavy_packages_out():
    script = (
        "import sys, threading, orjson\n"
        "from services.management import zygote\n"
        "zygote.preload(zygote.entries_of_suite())\n"
        "heavy = sorted(n for n in ('pandas', 'numpy', 'sklearn', 'yfinance', 'rich', 'matplotlib')"
        " if n in sys.modules)\n"
        "print(orjson.dumps({'threads': threading.active_count(), 'heavy': heavy,"
        " 'tracked': len(zygote.module_files()), 'loop': 'asyncio.events' in sys.modules"
        " and sys.modules['asyncio'].events._get_running_loop() is not None}).decode())\n"
    )
    found = last_json_line(script)
    assert found["threads"] == 1 and found["heavy"] == [] and found["loop"] is False
    assert found["tracked"] > 20  # the suite's own modules are watched for changes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_info")
def test_plugging_the_heap_takes_every_free_chunk_of_the_main_arena():
    # Holes between live chunks, as imports leave them: every other one of 400 chunks freed.
    script = (
        "import ctypes, re, orjson\n"
        "from services.management import zygote\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "kept = [libc.malloc(200 + 48 * (i % 20)) for i in range(400)]\n"
        "for p in kept[::2]:\n    libc.free(p)\n"
        "def free_chunks():\n"
        "    buf, size = ctypes.c_char_p(), ctypes.c_size_t()\n"
        "    libc.open_memstream.restype = ctypes.c_void_p\n"
        "    f = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))\n"
        "    libc.malloc_info(0, ctypes.c_void_p(f)); libc.fclose(ctypes.c_void_p(f))\n"
        "    text = ctypes.string_at(buf, size.value).split(b'</heap>')[0]\n"
        "    return sum(int(n) for n in re.findall(rb'count=\"(\\d+)\"/>', text))\n"
        "before = free_chunks()\n"
        "plugged = zygote.plug_heap_holes()\n"
        "print(orjson.dumps({'before': before, 'plugged': plugged, 'after': free_chunks(),"
        " 'again': zygote.plug_heap_holes()}).decode())\n"
    )
    found = last_json_line(script)
    # tcache keeps up to 7 freed chunks per size out of the bins: most of the 200 are binned
    assert found["before"] >= 50 and found["plugged"] >= 50 * 200
    # the few left are the report's own buffers, freed after malloc_info wrote them
    assert found["after"] <= 5 and found["again"] < found["plugged"] / 10


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the layout of CPython 3.11's dict keys")
def test_settling_gives_module_namespaces_their_version_and_changes_nothing_else():
    """In a fresh interpreter (the versions are written once per namespace): each module's key
    table has a version afterwards (dk_version, at offset 12 of PyDictKeysObject in 3.11), and
    every module keeps its names and values."""
    code = """
import ctypes, json, sys
from services.management import zygote

def version(namespace):
    keys = ctypes.c_void_p.from_address(id(namespace) + 32).value  # PyDictObject.ma_keys
    return ctypes.c_uint32.from_address(keys + 12).value

import email.parser
before = {name: dict(vars(m)) for name, m in list(sys.modules.items()) if hasattr(m, "__dict__") and name != "__main__"}
unversioned = version(email.parser.__dict__) == 0
modules, classes = zygote.settle_lookup_versions()
after = {name: dict(vars(sys.modules[name])) for name in before}
print(json.dumps({
    "unversioned_before": unversioned,
    "versioned_after": version(email.parser.__dict__) != 0,
    "modules": modules, "classes": classes,
    "same": all(before[n].keys() == after[n].keys() and all(before[n][k] is after[n][k] for k in before[n]) for n in before),
}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=True
    )
    found = orjson.loads(done.stdout)
    assert found["unversioned_before"] and found["versioned_after"], found
    assert found["modules"] > 10 and found["classes"] > 100, found
    assert found["same"], found


# ---- the dataclasses' code cache (zygote.DataclassCode) -----------------------------------------

DATACLASS_SOURCE = """
import dataclasses
from typing import ClassVar

@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Quote:
    symbol: str
    price: float = 0.0
    tags: tuple = dataclasses.field(default_factory=tuple)
    unit: ClassVar[str] = "AUD"

@dataclasses.dataclass(kw_only=True)
class Order:
    quantity: int
    side: str = "BUY"
"""


def make_classes(cache: zygote.DataclassCode | None) -> dict:
    """The classes of DATACLASS_SOURCE, made under `cache` (None: plain dataclasses)."""
    import types

    module = types.ModuleType("made_dataclasses")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        if cache is None:
            exec(DATACLASS_SOURCE, vars(module))
        else:
            with cache:
                exec(DATACLASS_SOURCE, vars(module))
    finally:
        del sys.modules[module.__name__]
    return vars(module)


def method_code(namespace: dict) -> dict[str, object]:
    return {
        f"{cls}.{name}": getattr(namespace[cls], name).__code__
        for cls in ("Quote", "Order")
        for name in ("__init__", "__repr__", "__eq__", "__setattr__", "__lt__", "__hash__")
        if hasattr(getattr(namespace[cls], name, None), "__code__")
    }


def test_dataclasses_made_from_the_cache_are_the_ones_compiling_makes(tmp_path: Path):
    path = tmp_path / "cache.marshal"
    plain = make_classes(None)
    first = zygote.DataclassCode(path, write=True)
    compiled = make_classes(first)
    assert first.new and path.exists()  # compiled once, written
    second = zygote.DataclassCode(path, write=True)
    cached = make_classes(second)
    assert second.new == {} and len(second.used) == len(first.used)  # every text from the file
    assert dataclasses_exec_is_the_builtin()
    for made in (compiled, cached):
        assert method_code(made) == method_code(plain)  # code objects compare by their contents
        quote = made["Quote"]("CBA.AX", 101.5)
        assert repr(quote) == "Quote(symbol='CBA.AX', price=101.5, tags=())"
        assert quote == made["Quote"]("CBA.AX", 101.5) and quote < made["Quote"]("WBC.AX")
        with pytest.raises(AttributeError):  # frozen (FrozenInstanceError)
            quote.price = 1.0  # type: ignore[misc]
        assert made["Order"](quantity=3).side == "BUY"
        with pytest.raises(TypeError):
            made["Order"](3)  # keyword-only


def dataclasses_exec_is_the_builtin() -> bool:
    import dataclasses

    return "exec" not in vars(dataclasses)  # the context's shadow is gone afterwards


def test_a_text_is_taken_from_the_cache_only_when_it_is_the_same_text(tmp_path: Path):
    path = tmp_path / "cache.marshal"
    make_classes(zygote.DataclassCode(path, write=True))
    cache = zygote.DataclassCode(path)
    cache.load()
    key, place = next(iter(cache.index.items()))
    other = next(k for k in cache.index if k != key)
    cache.index[other] = place  # another text's checksum pointing at this record (a collision)
    import marshal

    text, code = marshal.loads(cache._map[place[0] : place[0] + place[1]])
    assert cache.cached(text, key) == code
    assert cache.cached(text + " ", other) is None  # its record holds another text: compiled instead


@pytest.mark.parametrize(
    "content",
    [b"", b"not a cache", b"\x00" * 64, b"%MAGIC%DC01\xff\xff\x00\x00garbage", b"%MAGIC%DC00" + b"\x00" * 8],
)
def test_a_damaged_or_foreign_cache_file_is_ignored_and_replaced(tmp_path: Path, content: bytes):
    from importlib.util import MAGIC_NUMBER

    path = tmp_path / "cache.marshal"
    path.write_bytes(content.replace(b"%MAGIC%", MAGIC_NUMBER))
    cache = zygote.DataclassCode(path, write=True)
    made = make_classes(cache)
    assert cache.new and method_code(made) == method_code(make_classes(None))
    again = zygote.DataclassCode(path)
    make_classes(again)
    assert again.new == {}  # rewritten whole


def test_the_cache_is_not_written_when_bytecode_is_not(tmp_path: Path, monkeypatch):
    path = tmp_path / "cache.marshal"
    make_classes(zygote.DataclassCode(path, write=False))
    assert not path.exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    make_classes(zygote.DataclassCode(path))  # as PYTHONDONTWRITEBYTECODE=1 says
    assert not path.exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    make_classes(zygote.DataclassCode(path))
    assert path.exists()


def test_texts_no_preload_uses_any_more_are_dropped(tmp_path: Path):
    import types

    path = tmp_path / "cache.marshal"
    module = types.ModuleType("dropped_dataclasses")
    sys.modules[module.__name__] = module
    try:
        with zygote.DataclassCode(path, write=True):
            for i in range(30):  # 30 classes' worth of texts, of which the next preload uses none
                exec(
                    f"import dataclasses\n@dataclasses.dataclass\nclass C{i}:\n    f{i}: int\n", vars(module)
                )
    finally:
        del sys.modules[module.__name__]
    full = zygote.DataclassCode(path)
    full.load()
    make_classes(zygote.DataclassCode(path, write=True))  # uses none of them, compiles its own
    kept = zygote.DataclassCode(path)
    kept.load()
    assert 0 < len(kept.index) < len(full.index)  # only what the last preload used (and compiled)
    make_classes(again := zygote.DataclassCode(path))
    assert again.new == {}


def test_write_cache_writes_it_under_pythondontwritebytecode(tmp_path: Path):
    """Set-up's step (after compileall): the suite's preload, the file written even so."""
    target = zygote.DataclassCode().path
    before = target.stat().st_mtime_ns if target.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "services.management.zygote", "--write-cache"],
        cwd=REPO,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert str(target) in done.stdout and target.exists()
    cache = zygote.DataclassCode()
    cache.load()
    assert len(cache.index) > 100  # the suite's dataclasses' methods (about 800)
    assert before is None or target.stat().st_mtime_ns >= before
