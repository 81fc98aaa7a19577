"""The zygote: one preloaded, single-threaded parent that forks the services.

Each service started by `python services/<dir>/<file>.py` pays for its own interpreter, asyncio,
ssl, orjson, the Redis client and the suite's shared modules, and spends most of its start-up
importing them. The zygote imports all of that once (whatever the entry files import at their top,
plus what the services import lazily on their first steps), calls `gc.freeze()` so that the
collector never writes to those objects' pages, and forks a service on request: the children share
the preloaded pages copy-on-write, and a fork is ready to serve in a few milliseconds.

The zygote never starts an event loop or a thread. It is a separate interpreter whose environment
holds no secret, started by services/management/daemon_boot.py: by the supervisor daemon before its
own imports (so the preload runs beside the supervisor's start), by a supervisor started otherwise
before it starts Redis, and again by the launcher when one died or its code changed.

The protocol, one JSON object per line on a Unix socket pair (the zygote's side blocking):
- zygote -> supervisor, once preloaded: `{"ready": pid, "modules": n}`;
- supervisor -> zygote: `{"op": "spawn", "id": n, "name", "entry", "env", "cwd", "log", "secrets"}`,
  sent with one file descriptor (SCM_RIGHTS) when `secrets` (a list of variable names) is not
  empty: the read end of a pipe holding those variables' values (a JSON object). The zygote never
  reads it: the forked child does, and the zygote closes its copy. `env` holds no secret value, so
  the zygote's memory never does either, and no service inherits from it (in its copy of the
  zygote's heap: freed requests stay there) a secret that was another service's. Answered `{"id": n, "pid": pid}`, `{"id": n, "stale": true}` (a preloaded file changed on disk:
  start a fresh zygote) or `{"id": n, "error": "..."}`;
- zygote -> supervisor, whenever a child exits (the zygote is its parent and reaps it):
  `{"exit": pid, "code": c}` (negative: killed by that signal, as in asyncio);
- supervisor -> zygote: `{"op": "retire"}`: spawn no more, exit once the last child is reaped.
The zygote exits when the supervisor's end closes (its children keep running, in their own
sessions, to be adopted by the next supervisor).
"""

from __future__ import annotations

import ast
import gc
import json
import os
import re
import selectors
import signal
import socket
import sys
import sysconfig
import threading
import traceback
from array import array
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[2]

#: Imported by the services after start (lazily, on their first connection or step), and by the
#: supervisor: preloaded so that no child pays for them.
LAZY_IMPORTS = (
    "orjson",
    "psutil",
    "redis.asyncio",
    "redis.asyncio.client",
    "redis.asyncio.connection",
    "httpx",  # not httpcore: it comes with a client's first use (and brings trio, 4 MB)
    "concurrent.futures.thread",  # asyncio's default executor
    "services.base",
    "services.base.base_service",  # services.base's names load on first use (services/base/lazy.py)
    "services.base.rpc.client",
    "services.base.rpc.server",
    "services.base.cpu_lane",
    "services.domain.supervision",
    "services.registry",
    "sqlite3",
    "json",
    "logging.handlers",
    "hashlib",
    "random",
    "uuid",
)
#: Stays out of the zygote even when an entry file imports it: big, and needed by one service at
#: most on some configurations (they import it lazily themselves).
NEVER_PRELOAD = frozenset({"pandas", "numpy", "sklearn", "yfinance", "matplotlib", "textual"})

#: Signal dispositions of a fresh interpreter, recorded at import (before anything changes them).
_FRESH_SIGNALS: dict[int, Any] = {}
for _sig in signal.valid_signals():
    if _sig not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            _FRESH_SIGNALS[_sig] = signal.getsignal(_sig)
        except (OSError, ValueError):
            pass


def entry_imports(path: Path, code: CodeType | None = None) -> list[str]:
    """The modules an entry file imports at its top level (`from x import y` counts x and x.y, as
    y may be a submodule).

    Read from its compiled code (`code`, else the bytecode cache, as entry_code): a statement of the
    module's body starts at column 0, an import nested in a block or a function does not. On the
    cold start's path that is a third of the time of parsing the sources (17 against 45 ms for the
    suite's entries and service_manager.py). Code compiled without column positions (`-X
    no_debug_ranges`) is read from the source instead. One difference: a statement after a `;` on
    the line of another is not read (ruff's E702 keeps those out of the suite's code)."""
    import dis

    try:
        code = code or entry_code(path)
    except (OSError, SyntaxError, ValueError, ImportError):
        return []
    names: list[str] = []
    level = fromlist = None  # the two constants an IMPORT_NAME takes
    for instruction in dis.get_instructions(code):
        if instruction.opname == "LOAD_CONST":
            level, fromlist = fromlist, instruction.argval
            continue
        if instruction.opname == "IMPORT_NAME":
            column = instruction.positions.col_offset if instruction.positions else None
            if column is None:
                return source_imports(path)
            if column == 0 and level == 0:
                names.append(instruction.argval)
                names += [f"{instruction.argval}.{name}" for name in fromlist or ()]
        level = fromlist = None
    return names


def source_imports(path: Path) -> list[str]:
    """entry_imports from the source: the top-level import statements of its syntax tree."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError):
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def preload_names(
    entries: list[Path], extra: tuple[str, ...] = (), code_of: Callable[[Path], CodeType | None] | None = None
) -> list[str]:
    """What the zygote imports: the entries' top-level imports, then the lazy ones, then `extra`,
    in order. `code_of`: each entry's code when already compiled."""
    seen: dict[str, None] = {}
    for entry in entries:
        for name in entry_imports(entry, code_of(entry) if code_of else None):
            if name.partition(".")[0] not in NEVER_PRELOAD | {"__future__"}:
                seen.setdefault(name)
    for name in (*LAZY_IMPORTS, *extra):
        seen.setdefault(name)
    return list(seen)


def preload(
    entries: list[Path], extra: tuple[str, ...] = (), code_of: Callable[[Path], CodeType | None] | None = None
) -> int:
    """Import what the services share; a module that fails is left to the service to report."""
    import importlib

    # httpx imports its command-line tool (rich, pygments, click: 4 MB, 80 modules) when they are
    # installed; no service runs it, and with this entry absent httpx does without.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    for name in preload_names(entries, extra, code_of):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # `from x import y` where y is a name, not a module; or a missing package
        except Exception as exc:  # a broken module: its service will say so in its own log
            print(f"zygote: preloading {name} failed: {exc!r}", file=sys.stderr)
    return len(sys.modules)


#: What a preload keeps for its life, so that freeing it leaves no holes in the zygote's memory
#: for the services' first objects (a write into a hole copies the zygote's page around it).
_KEPT: list[Any] = []


class DataclassCode:
    """The compiled code of the methods `@dataclass` writes, kept on disk between preloads.

    CPython 3.11's dataclasses write each generated method (`__init__`, `__eq__`, `__repr__`, a
    frozen class's `__setattr__`...) as source text and compile it with `exec`: the suite's ~155
    dataclasses make ~800 such methods, 60-90 ms of the preload's ~230, most of it the compiler.
    Within this context `dataclasses.exec` (a module global, which shadows the builtin for that
    module alone) compiles each text once and keeps its code in
    `__pycache__/zygote-dataclass-code.<tag>.marshal`; the next preload executes the cached code of
    the same text. The same text compiles to the same code (filename `<string>`, no inherited
    `__future__` flags, as `exec` of a string in dataclasses does), so nothing else changes.

    The file is mapped (mmap), not read: an index (CRC-32 of a text -> its record's place) and
    records `(text, code)`, each unmarshalled when its text is asked for and checked against it (a
    different text with the same CRC is compiled). So the preload allocates and frees what
    compiling would have, in the same order, and the zygote's memory stays as packed as without
    the cache (all of it unmarshalled up front and freed at the end cost the services ~0.8 MB each
    in copied pages, `bench_suite.py`). The index stays alive (~0.1 MB, shared).

    Like Python's own bytecode cache: read and written beside the modules (`sys.pycache_prefix`
    honoured), not written under PYTHONDONTWRITEBYTECODE or where the folder is read-only, and
    ignored when it is unreadable or was written by another Python (the magic number). Set-up writes
    it (`python -m services.management.zygote --write-cache`, after compileall), as it does the
    bytecode caches, so that a machine with PYTHONDONTWRITEBYTECODE set has it too."""

    #: After Python's magic number: this layout's version.
    FORMAT = b"DC01"

    def __init__(self, path: Path | None = None, write: bool | None = None):
        if path is None:
            from importlib.util import cache_from_source

            tag = sys.implementation.cache_tag or "none"
            path = Path(cache_from_source(__file__)).with_name(f"zygote-dataclass-code.{tag}.marshal")
        self.path = path
        self.write = not sys.dont_write_bytecode if write is None else write
        self.index: dict[int, tuple[int, int]] = {}  # crc32 of a text -> (offset, size) of its record
        self.used: set[int] = set()  # the CRCs of the texts asked for
        self.new: dict[str, CodeType] = {}  # texts compiled here (not in the file)
        self._map: Any = None  # the file, mapped
        self._module: ModuleType | None = None

    def load(self) -> None:
        import marshal
        import mmap
        from importlib.util import MAGIC_NUMBER

        try:
            with open(self.path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # missing, or empty (mmap refuses a size of 0)
            return
        try:
            signature = MAGIC_NUMBER + self.FORMAT
            head = len(signature) + 4
            if mapped[: len(signature)] != signature:
                raise ValueError("another Python's, or another format")
            size = int.from_bytes(mapped[len(signature) : head], "little")
            index = marshal.loads(mapped[head : head + size])
            if not isinstance(index, dict):
                raise ValueError("no index")
            start = head + size
            index = {key: (start + offset, length) for key, (offset, length) in index.items()}
        except (EOFError, ValueError, TypeError):
            mapped.close()
            return
        self._map, self.index = mapped, index

    def cached(self, source: str, key: int) -> CodeType | None:
        """The code of `source` from the file, if it holds that text."""
        import marshal

        place = self.index.get(key)
        if place is None or self._map is None:
            return None
        try:
            text, code = marshal.loads(self._map[place[0] : place[0] + place[1]])
        except (EOFError, ValueError, TypeError):
            return None
        return code if isinstance(code, CodeType) and text == source else None

    def exec(self, source: Any, globals: Any = None, locals: Any = None) -> None:
        """`exec` for dataclasses: a text's code from the cache, compiled once."""
        if isinstance(source, str):
            import zlib

            key = zlib.crc32(source.encode())
            code = self.cached(source, key) or self.new.get(source)
            if code is None:
                code = compile(source, "<string>", "exec", dont_inherit=True)
                self.new[source] = code
            self.used.add(key)
            source = code
        exec(source, globals, locals)

    def records(self) -> list[tuple[str, CodeType]]:
        """What the file will hold: the texts compiled here, and those of the file that this
        preload used (or all of them while the file holds at most twice as many as were used:
        other configurations' preloads share it)."""
        import marshal

        keep_all = len(self.index) <= 2 * len(self.used)
        found: list[tuple[str, CodeType]] = list(self.new.items())
        for key, (offset, size) in self.index.items():
            if self._map is not None and (keep_all or key in self.used):
                try:
                    text, code = marshal.loads(self._map[offset : offset + size])
                except (EOFError, ValueError, TypeError):
                    continue
                if isinstance(text, str) and isinstance(code, CodeType) and text not in self.new:
                    found.append((text, code))
        return found

    def save(self) -> None:
        """Write the file when this preload compiled a text it lacked (atomically: another preload
        may read it meanwhile)."""
        if not self.new or not self.write:
            return
        import marshal
        import zlib
        from importlib.util import MAGIC_NUMBER

        index: dict[int, tuple[int, int]] = {}
        body = bytearray()
        for text, code in self.records():
            record = marshal.dumps((text, code))
            index.setdefault(zlib.crc32(text.encode()), (len(body), len(record)))
            body += record
        head = marshal.dumps(index)  # offsets from the records' start, right after it
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(MAGIC_NUMBER + self.FORMAT + len(head).to_bytes(4, "little") + head + body)
            os.replace(temporary, self.path)
        except (OSError, ValueError):
            with _suppress():
                temporary.unlink()

    def __enter__(self) -> DataclassCode:
        import dataclasses

        self.load()
        self._module = dataclasses
        dataclasses.exec = self.exec  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._module is not None:
            with _suppress():
                del self._module.exec
            self._module = None
        try:
            self.save()
        finally:
            if self._map is not None:
                self._map.close()
                self._map = None
            _KEPT.append((self.index, self.used))


_FREE_CHUNKS = re.compile(rb'<size from="(\d+)" to="\d+" total="\d+" count="(\d+)"/>')
_LIBC: list = []  # the C library's handle, made once: each CDLL() makes a new ctypes class


def libc() -> Any:
    """The process's C library (ctypes), loaded once and shared by the zygote's children."""
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def plug_heap_holes(rounds: int = 6) -> int:
    """Allocate, and never free, the free chunks of the C heap (glibc's main arena); the bytes
    taken. Importing leaves small free chunks all over the heap between live objects. A forked
    service's first `malloc`s would reuse them, and its first write into one copies the zygote's
    page around it: each service copied about 1 MB of the zygote's heap that way (8 MB PSS for the
    suite, `bench_suite.py`). Plugged, the holes stay the zygote's (shared with every child) and a
    service allocates from fresh memory at the heap's top. First `malloc_trim` hands the whole
    pages inside the holes back to the kernel (about 1.3 MB less for the suite; taking a chunk writes
    only its edges). Anything but glibc (no `malloc_info`): nothing is done."""
    try:
        import ctypes

        c = libc()
        malloc, free, fclose, malloc_info = c.malloc, c.free, c.fclose, c.malloc_info
        c.malloc_trim.argtypes = [ctypes.c_size_t]
        malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        open_memstream = c.open_memstream
        open_memstream.restype = ctypes.c_void_p
    except (OSError, AttributeError):
        return 0
    c.malloc_trim(0)
    plugged = 0
    for _ in range(rounds):  # a chunk taken from a bigger one leaves a smaller one: again
        buf, size = ctypes.c_char_p(), ctypes.c_size_t()
        stream = open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if not stream:
            break
        malloc_info(0, ctypes.c_void_p(stream))
        fclose(ctypes.c_void_p(stream))
        report = ctypes.string_at(buf, size.value)
        free(buf)
        main_arena = report.split(b"</heap>", 1)[0]  # threads' arenas: the zygote has none
        chunks = [(int(low) & ~7, int(count)) for low, count in _FREE_CHUNKS.findall(main_arena)]
        if not chunks:
            break
        for chunk, count in chunks:  # sizes with their flag bit; malloc(chunk - 8) takes `chunk`
            for _ in range(count):
                malloc(chunk - 8)
            plugged += chunk * count
    return plugged


KSM_RUN = Path("/sys/kernel/mm/ksm/run")
PR_SET_MEMORY_MERGE, MADV_MERGEABLE = 67, 12


def mark_mergeable(environ: Any = os.environ) -> str:
    """Offer this process's private writable memory to the kernel's same-page merging (KSM) when
    TRADING_MANAGER_KSM asks (auto: when /sys/kernel/mm/ksm/run is 1): what was done, "" if
    nothing. A forked service's pages that CPython copied to touch a reference count and then put
    back are byte for byte the zygote's again, and many are the same in every service; ksmd merges
    such pages into one read-only copy. The children inherit the marks (VM_MERGEABLE on each
    mapping; prctl's per-process flag too, which also covers mappings made later). First
    prctl(PR_SET_MEMORY_MERGE) (Linux 6.4+, no privilege needed: checked as uid nobody on 6.18), else madvise(MADV_MERGEABLE)
    over /proc/self/maps. Never fatal: a refusal is said once on stderr (the zygote's log)."""
    try:
        from services.base.knobs import read_knobs
        from services.management.manager_knobs import SupervisorKnobs

        mode = read_knobs(SupervisorKnobs, environ).ksm
    except Exception as exc:  # a bad value: the supervisor's own read of the knobs says so
        print(f"zygote: TRADING_MANAGER_KSM ignored: {exc}", file=sys.stderr)
        return ""
    if mode == "off":
        return ""
    if mode == "auto":
        try:
            if KSM_RUN.read_text().strip() != "1":
                return ""
        except OSError:
            return ""  # no KSM in this kernel
    try:
        import ctypes

        c = libc()
        zero = ctypes.c_ulong(0)  # no argtypes set: the C library's handle is shared (set_title)
        if c.prctl(ctypes.c_int(PR_SET_MEMORY_MERGE), ctypes.c_ulong(1), zero, zero, zero) == 0:
            return "prctl"
        prctl_error = os.strerror(ctypes.get_errno())
        marked, refused = 0, ""
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            if (
                fields[1][:2] != "rw"
                or fields[1][3] != "p"
                or (name.startswith("[") and name not in ("[heap]", "[stack]"))
            ):
                continue  # read-only, shared, or the kernel's own ([vvar], [vdso]...)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if (
                c.madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), ctypes.c_int(MADV_MERGEABLE))
                == 0
            ):
                marked += high - low
            else:
                refused = refused or os.strerror(ctypes.get_errno())
    except Exception as exc:  # never fatal: the zygote goes on without
        print(f"zygote: KSM not used: {exc!r}", file=sys.stderr)
        return ""
    if not marked:
        print(f"zygote: KSM not used: prctl: {prctl_error}; madvise: {refused}", file=sys.stderr)
        return ""
    return f"madvise {marked >> 20} MiB"


_SETTLED: list[FunctionType] = []


def settle_lookup_versions() -> tuple[int, int]:
    """Give every preloaded module's namespace and every class the version numbers CPython 3.11
    writes into them the first time a lookup through them is cached (a module's key table when a
    global is read by specialised code; a class when an attribute lookup is cached): written here,
    before the fork, and not into a page every service would copy. (modules, classes) settled.
    Nothing else changes: the versions only say that the namespace has not changed since."""
    import ctypes

    try:
        lookup = ctypes.pythonapi._PyType_Lookup  # the C lookup: no metaclass code runs
    except AttributeError:
        return 0, 0
    lookup.restype, lookup.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.py_object]
    holder: dict[str, Any] = {}
    exec(compile("def read():\n    return __name__\n", "<zygote>", "exec"), holder)
    template: CodeType = holder["read"].__code__
    modules = 0
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or "__name__" not in namespace:
            continue
        # Its own code object each (specialised for this namespace's keys), kept: freed, they
        # would leave holes in the zygote's pages for the services' first objects.
        read = FunctionType(template.replace(), namespace)
        for _ in range(9):  # quickened by the 8th call, which specialises it
            read()
        _SETTLED.append(read)
        modules += 1
    probe = sys.intern("__zygote_settle__")
    seen: set[int] = set()
    stack: list[type] = [object]  # every class, the interpreter's own (static) ones included
    while stack:
        cls = stack.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        lookup(cls, probe)
        try:
            stack += type.__subclasses__(cls)
        except TypeError:
            pass
    return modules, len(seen)


def module_files() -> dict[str, int]:
    """mtime (ns) of every loaded module's file outside the interpreter's own library and the
    installed packages: the suite's code (and a test's or operator's own modules) the zygote holds."""
    library = tuple({sys.base_prefix, sys.prefix, sysconfig.get_paths()["stdlib"]})
    found: dict[str, int] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or file.startswith(library) or "site-packages" in file:
            continue
        try:
            found[file] = os.stat(file).st_mtime_ns
        except OSError:
            found[file] = -1
    return found


def changed_files(files: dict[str, int]) -> list[str]:
    """Which of the recorded files changed (or vanished) since they were loaded."""
    changed = []
    for file, mtime in files.items():
        try:
            now = os.stat(file).st_mtime_ns
        except OSError:
            now = -1
        if now != mtime:
            changed.append(file)
    return changed


def entry_code(entry: Path) -> CodeType:
    """An entry file's code as an import gets a module's: from its bytecode cache
    (`__pycache__/<name>.cpython-311.pyc`, written by `python -m compileall` or, unless
    PYTHONDONTWRITEBYTECODE is set, here) when that matches the file's time and size, else compiled
    from the file. Unmarshalled in ~1 ms where compiling the eight entries takes ~40 ms of the cold
    start's path. The same rule as every module the zygote preloads: a file rewritten within the same
    second at the same size keeps the cached code (`restart` after touching it)."""
    if entry.suffix == ".py":
        from importlib.machinery import SourceFileLoader

        return SourceFileLoader("__main__", str(entry)).get_code("__main__")  # type: ignore[return-value]
    return compile(entry.read_bytes(), str(entry), "exec", dont_inherit=True)


def set_title(title: str, short: str) -> None:
    """The process title (`ps`, /proc/<pid>/cmdline) and its 15-character name (/proc/<pid>/comm)."""
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:
        pass
    try:
        pr_set_name = 15
        libc().prctl(pr_set_name, short.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Zygote:
    """The blocking loop: spawn requests in, pids and exit notices out."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.selector: selectors.BaseSelector | None = None  # made by loop(): after any fork
        self.children: dict[int, int] = {}  # pidfd -> pid
        self.files: dict[str, int] = {}
        self.code_cache: dict[str, tuple[tuple[int, int], CodeType]] = {}
        self.retiring = False
        self.buffer = b""
        #: Secrets' pipes received with spawn requests not yet served, in the order they came:
        #: a request's descriptor arrives with its line's first byte, so before its last.
        self.secret_fds: deque[int] = deque()

    def send(self, message: dict) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def serve(self, entries: list[Path]) -> None:
        """Preload, then fork services on request until the supervisor is gone."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # from the start: see loop()
        os.environ["SPT_NOENV"] = "1"  # keep /proc/<pid>/environ readable under a process title
        set_title(f"trading-zygote {REPO}", "trading-zygote")
        self.loop(self.prepare(entries))

    def prepare(
        self, entries: list[Path], extra: tuple[str, ...] = (), write_cache: bool | None = None
    ) -> int:
        """Import what the services share (and `extra`), compile the entries, freeze: the number
        of modules loaded. The daemon calls it too, before it forks its first zygote
        (daemon_boot.fork_zygote). `write_cache`: write the dataclasses' code cache (DataclassCode)
        even under PYTHONDONTWRITEBYTECODE (True), never (False), or unless that is set (None)."""
        gc.disable()  # no collection while preloading: freeze() then keeps every object in place
        for entry in entries:
            self.compiled(entry)  # first: the preload reads their imports from their code
        with DataclassCode(write=write_cache):
            modules = preload(entries, extra, self.compiled)
        self.files = module_files()
        settle_lookup_versions()
        plug_heap_holes()
        mark_mergeable()
        gc.freeze()
        if threading.active_count() != 1:
            print("zygote: a preloaded module started a thread", file=sys.stderr)
        return modules

    def loop(self, modules: int) -> None:
        """Say ready, then serve spawn requests and reap children until told to go."""
        # Ctrl-C at a terminal reaches the foreground supervisor's whole process group: the
        # supervisor stops the services and then this zygote, in order (children reset it).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.environ["SPT_NOENV"] = "1"
        set_title(f"trading-zygote {REPO}", "trading-zygote")
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ, None)
        self.send({"ready": os.getpid(), "modules": modules})
        while not (self.retiring and not self.children):
            for key, _ in self.selector.select():
                if key.data is None:
                    if not self.read_requests():
                        return  # the supervisor is gone
                else:
                    self.reap(key.fd, key.data)

    def read_requests(self) -> bool:
        data, fds = receive(self.sock)
        self.secret_fds.extend(fds)
        if not data:
            return False
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            request = json.loads(line)
            if request.get("op") == "retire":
                self.retiring = True
            elif request.get("op") == "spawn":
                secrets_fd = self.secret_fds.popleft() if request.get("secrets") and self.secret_fds else None
                try:
                    self.send(self.spawn(request, secrets_fd))
                finally:
                    if secrets_fd is not None:
                        os.close(secrets_fd)  # the child has its own copy (or there is no child)
        return True

    def reap(self, pidfd: int, pid: int) -> None:
        assert self.selector is not None  # called from loop()
        self.selector.unregister(pidfd)
        os.close(pidfd)
        del self.children[pidfd]
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return
        self.send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def compiled(self, entry: Path) -> CodeType | None:
        """The entry file's code, compiled once per version of the file (a fork runs it at once)."""
        try:
            stat = entry.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            cached = self.code_cache.get(str(entry))
            if cached is not None and cached[0] == key:
                return cached[1]
            code = entry_code(entry)
        except (OSError, SyntaxError, ValueError, ImportError):
            return None  # the child compiles it again and reports the error in its log
        self.code_cache[str(entry)] = (key, code)
        return code

    def spawn(self, request: dict, secrets_fd: int | None = None) -> dict:
        if self.retiring:
            return {"id": request["id"], "error": "retiring"}
        if request.get("secrets") and secrets_fd is None:
            return {"id": request["id"], "error": "the secrets' pipe did not come with the request"}
        if changed := changed_files(self.files):
            return {"id": request["id"], "stale": True, "changed": changed[:5]}
        entry = Path(request["entry"])
        code = self.compiled(entry)
        sys.stdout.flush()
        sys.stderr.flush()
        plug_heap_holes()  # what serving the last requests freed
        pid = os.fork()
        if pid == 0:
            become_service(request, entry, code, self, secrets_fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = pid
        assert self.selector is not None  # called from loop()
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        return {"id": request["id"], "pid": pid}

    def close_in_child(self) -> None:
        if self.selector is not None:
            self.selector.close()
        self.sock.close()


#: The most descriptors one read takes: a request comes with one at most, and a read of a Unix
#: stream socket stops after a message that carried descriptors.
_MAX_FDS = 16


def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """What arrived on the socket, and the descriptors that came with it (SCM_RIGHTS)."""
    data, ancillary, flags, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(_MAX_FDS * array("i").itemsize))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds += received
    if flags & socket.MSG_CTRUNC:  # never with one per request: the requests are refused then
        print("zygote: descriptors lost (MSG_CTRUNC)", file=sys.stderr)
    return data, fds


def read_secrets(fd: int, names: list[str]) -> dict[str, str]:
    """In the forked child: the variables of `names` from the secrets' pipe (read to its end and
    closed). A pipe that does not hold them all is refused: the service would start without them."""
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    values = json.loads(b"".join(chunks))
    if not isinstance(values, dict) or set(values) != set(names):
        raise ValueError("the secrets' pipe does not hold the variables the request names")
    return {str(k): str(v) for k, v in values.items()}


def become_service(
    request: dict, entry: Path, code: CodeType | None, zygote: Zygote | None, secrets_fd: int | None = None
) -> NoReturn:
    """In the forked child: become `python <entry>` with the given environment (its secrets read
    from `secrets_fd`, which only this child reads), then exit."""
    status = 1
    try:
        os.setsid()  # its own session: survives the zygote and the supervisor, like exec mode
        secrets = read_secrets(secrets_fd, request["secrets"]) if secrets_fd is not None else {}
        if zygote is not None:
            zygote.close_in_child()
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        for sig, handler in _FRESH_SIGNALS.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, TypeError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        signal.set_wakeup_fd(-1)
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.update(secrets)
        os.chdir(request.get("cwd") or REPO)
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=True, write_through=unbuffered)  # type: ignore[union-attr]
        set_title(f"{request['name']}: {_shown(entry)}", request["name"])
        forget_parent_state()
        gc.enable()
        status = run_entry(entry, code)
    except BaseException:  # the child must never return into the zygote's loop
        traceback.print_exc()
    finally:
        with _suppress():
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _shown(entry: Path) -> str:
    try:
        return str(entry.relative_to(REPO))
    except ValueError:
        return str(entry)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def forget_parent_state() -> None:
    """What the preloaded modules (or the supervisor the zygote was forked from) cached about the
    parent: the settings and clock singletons, logging handlers, the event loop policy, random."""
    import asyncio
    import logging
    import random

    from services.base import clock, config

    config.reset_settings()
    clock.set_clock(None)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    asyncio.set_event_loop_policy(None)
    asyncio.events._set_running_loop(None)
    random.seed()


def run_entry(entry: Path, code: CodeType | None) -> int:
    """Run the file as `python <entry>` does: a fresh `__main__`, its folder first on sys.path;
    the exit status as the interpreter would give it (atexit handlers run)."""
    import atexit

    main = ModuleType("__main__")
    main.__file__ = str(entry)
    main.__builtins__ = __builtins__  # type: ignore[attr-defined]
    main.__spec__ = None
    sys.modules["__main__"] = main
    sys.argv = [str(entry)]
    sys.path[0] = str(entry.parent)
    status = 0
    try:
        if code is None:
            code = compile(entry.read_bytes(), str(entry), "exec", dont_inherit=True)
        exec(code, main.__dict__)
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:  # printed like the interpreter does, exit 1
        traceback.print_exc()
        status = 1
    try:
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    return status


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def entries_of_suite() -> list[Path]:
    """The files the supervisor runs: the registry's, or TRADING_MANAGER_ENTRY_<SERVICE>'s."""
    from services.base.knobs import read_knobs
    from services.management.manager_knobs import SupervisorKnobs
    from services.registry import SERVICES

    knobs = read_knobs(SupervisorKnobs, os.environ)
    entries = [Path(knobs.entry_override(name) or s.entry) for name, s in SERVICES.items()]
    return [entry if entry.is_absolute() else REPO / entry for entry in entries]


def main(argv: list[str] | None = None) -> int:
    """`python -m services.management.zygote --fd N`: the zygote on an inherited socket."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, help="the inherited Unix socket")
    parser.add_argument("--title-room", default="", help="(room for the children's process titles)")
    parser.add_argument(
        "--write-cache",
        action="store_true",
        help="preload as the zygote does, write the dataclasses' code cache and exit (set-up runs it)",
    )
    args = parser.parse_args(argv)
    if args.write_cache:
        from services.management.daemon_boot import supervisor_modules

        modules = Zygote(socket.socket(socket.AF_UNIX)).prepare(
            entries_of_suite(), supervisor_modules(), True
        )
        print(f"zygote: {modules} modules preloaded; dataclasses' code cache in {DataclassCode().path}")
        return 0
    if args.fd is None:
        parser.error("--fd is required")
    sock = socket.socket(fileno=args.fd)
    try:
        Zygote(sock).serve(entries_of_suite())
    except (BrokenPipeError, ConnectionResetError):
        pass  # the supervisor is gone
    return 0


if __name__ == "__main__":
    sys.exit(main())
