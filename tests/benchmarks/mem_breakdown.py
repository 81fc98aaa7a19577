"""Where each forked service's own memory goes: page by page against the zygote's, by mapping.

    sudo .venv/bin/python tests/benchmarks/mem_breakdown.py [--keep] [--pids SUPERVISOR_SOCKET_DIR]

Starts the suite in zygote mode on temporary directories (as `bench_suite.py` does), runs one Big 4
prediction cycle, then for the zygote and every process it forked reads `/proc/<pid>/smaps` and
`/proc/<pid>/pagemap` and sorts each page the process holds alone (mapped once: USS) into
- **copied**: the zygote has a page at the same address, on another physical page (copy-on-write
  undone), split into *same* (byte for byte the zygote's again: a reference count taken and
  dropped) and *changed*;
- **new**: the zygote has nothing there (memory the service allocated itself),
by mapping: libpython's data and bss, the C heap (`[heap]`), anonymous mappings (CPython's
small-object arenas, big objects, thread stacks), the stack, other files' private pages.
Physical page numbers need root (CAP_SYS_ADMIN); without it the tool says so and stops.
"""

from __future__ import annotations

import argparse
import bisect
import os
import shutil
import struct
import sys
from collections import defaultdict
from pathlib import Path

from tests.support import make_suite_env, manager_cli, rpc_call_sync, short_tempdir

REPO = Path(__file__).resolve().parents[2]
PAGE = os.sysconf("SC_PAGE_SIZE")
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


def mappings(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, name) of each mapping."""
    found = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        found.append((start, end, parts[1], parts[5] if len(parts) > 5 else ""))
    return found


def pfns(pid: int, start: int, end: int) -> list[int]:
    """Physical page number of each page in [start, end), 0 where none is present."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        raw = f.read((end - start) // PAGE * 8)
    return [e & PFN_MASK if e & PRESENT else 0 for e in struct.unpack(f"{len(raw) // 8}Q", raw)]


def mapcounts(pages: list[int]) -> dict[int, int]:
    counts = {}
    with open("/proc/kpagecount", "rb") as f:
        for pfn in pages:
            f.seek(pfn * 8)
            counts[pfn] = struct.unpack("Q", f.read(8))[0]
    return counts


def category(name: str, perms: str, start: int, libpython_ranges: list[tuple[int, int]]) -> str:
    if "libpython" in name:
        return "libpython data+bss" if "w" in perms else "libpython (file)"
    if name == "[heap]":
        return "C heap [heap]"
    if name == "[stack]":
        return "stack"
    if name == "":
        return "anonymous (arenas, big objects)"
    if name.startswith("["):
        return name
    if ".so" in name:
        return "other .so data"
    return "other files"


class ObjectMap:
    """The zygote's objects (start, size, type) written by _mem_probe/sitecustomize.py."""

    def __init__(self, path: Path):
        rows = []
        for line in path.read_text().splitlines():
            address, size, pre, name = line.split(" ", 3)
            rows.append((int(address) - int(pre), int(size) + int(pre), int(pre), name))
        rows.sort()
        self.starts = [r[0] for r in rows]
        self.rows = rows

    def label(self, address: int) -> str:
        """What the word at `address` is: '<type> refcount|header|body', or 'unknown'."""
        i = bisect.bisect_right(self.starts, address) - 1
        if i < 0:
            return "unknown"
        start, size, pre, name = self.rows[i]
        if address >= start + size:
            return "unknown"
        offset = address - start - pre
        part = "gc-header" if offset < 0 else "refcount" if offset == 0 else "type" if offset == 8 else "body"
        return f"{name} {part}"


#: Changed words in copied pages, per label, and pages per label (a page shared among its labels).
WORDS: dict[str, int] = defaultdict(int)
PAGES: dict[str, float] = defaultdict(float)
STRINGS: dict[tuple[str, int], int] | None = defaultdict(int) if os.environ.get("MB_STRINGS") else None


def attribute(objects: ObjectMap, address: int, mine: bytes, theirs: bytes, cat: str) -> None:
    labels: dict[str, int] = defaultdict(int)
    a, b = struct.unpack(f"{PAGE // 8}Q", mine), struct.unpack(f"{PAGE // 8}Q", theirs)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            label = objects.label(address + i * 8)
            if label == "builtins.str refcount" and STRINGS is not None:
                length = a[i + 2] if i + 2 < len(a) else 0
                text = mine[i * 8 + 48 : i * 8 + 48 + min(length, 40)].decode("latin-1", "replace")
                STRINGS[(text, x - y)] += 1
            if label == "unknown":
                label = f"unknown in {cat}"
            labels[label] += 1
    for label, n in labels.items():
        WORDS[label] += n
        PAGES[label] += 1 / len(labels)


def breakdown(pid: int, zygote: int, objects: ObjectMap | None = None) -> dict[str, dict[str, int]]:
    """KiB per category and kind (copied-same, copied-changed, new) of the pages `pid` holds alone."""
    result: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    zmaps = mappings(zygote)
    mem = open(f"/proc/{pid}/mem", "rb")
    zmem = open(f"/proc/{zygote}/mem", "rb")
    try:
        for start, end, perms, name in mappings(pid):
            if name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            mine = pfns(pid, start, end)
            counts = mapcounts([p for p in mine if p])
            in_zygote = any(zs <= start < ze for zs, ze, _, _ in zmaps)
            theirs = pfns(zygote, start, end) if in_zygote else [0] * len(mine)
            cat = category(name, perms, start, [])
            for i, (p, z) in enumerate(zip(mine, theirs, strict=True)):
                if not p or counts.get(p, 0) != 1:
                    continue
                if z and z != p:
                    address = start + i * PAGE
                    try:
                        mem.seek(address)
                        zmem.seek(address)
                        page, zpage = mem.read(PAGE), zmem.read(PAGE)
                        same = page == zpage
                        if objects is not None and not same:
                            attribute(objects, address, page, zpage, cat)
                    except OSError:
                        same = False
                    kind = "copied-same" if same else "copied-changed"
                else:
                    kind = "new"
                result[cat][kind] += PAGE // 1024
    finally:
        mem.close()
        zmem.close()
    return result


def report(name: str, data: dict[str, dict[str, int]]) -> None:
    kinds = ("copied-same", "copied-changed", "new")
    total = {k: sum(d[k] for d in data.values()) for k in kinds}
    print(
        f"== {name}: alone {sum(total.values()) / 1024:.1f} MB "
        f"(copied {(total['copied-same'] + total['copied-changed']) / 1024:.1f}, of which same "
        f"{total['copied-same'] / 1024:.1f}; new {total['new'] / 1024:.1f})"
    )
    for cat, d in sorted(data.items(), key=lambda kv: -sum(kv[1].values())):
        if sum(d.values()) >= 64:
            print(f"   {cat:34} " + "  ".join(f"{k} {d[k] / 1024:5.2f}" for k in kinds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", action="store_true", help="say which objects the changed words are")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="leave the suite running (prints its dirs)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root: physical page numbers in /proc/<pid>/pagemap", file=sys.stderr)
        return 2
    root = short_tempdir("mb-")
    object_map = root / "objects.txt"
    dirs = make_suite_env(
        root,
        None,
        TRADING_MANAGER_LAUNCH="zygote",
        **(
            {"MB_OBJECT_MAP": str(object_map), "PYTHONPATH": f"{Path(__file__).parent / '_mem_probe'}:{REPO}"}
            if args.objects
            else {}
        ),
        TRADING_MODELS_DIR=os.environ.get("TRADING_MODELS_DIR", str(REPO / "models")),
    )
    try:
        result = manager_cli(dirs.env, "start", timeout_s=300)
        if result.returncode != 0:
            raise RuntimeError(f"start failed: {result.stdout} {result.stderr}")
        rpc_call_sync(dirs.socket("prediction"), "generate_predictions", {"symbols": None}, timeout_s=120)
        status = rpc_call_sync(dirs.socket("manager"), "status")
        zygote = status["supervisor"]["zygote"][0]
        objects = ObjectMap(object_map) if args.objects else None
        grand: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        supervisor = breakdown(status["supervisor"]["pid"], zygote, None)
        report("supervisor (forked from the zygote's preload: its pages against the zygote's)", supervisor)
        for service in status["services"]:
            data = breakdown(service["pid"], zygote, objects)
            report(service["name"], data)
            for cat, d in data.items():
                for k, v in d.items():
                    grand[cat][k] += v
        report("all services", grand)
        if objects is not None:
            print("== changed words of copied pages, by what they are (pages: each shared among its labels)")
            for label, pages in sorted(PAGES.items(), key=lambda kv: -kv[1])[: args.top]:
                print(f"   {label:60} {pages * PAGE / 2**20:6.2f} MB  {WORDS[label]:8} words")
        if STRINGS:
            print("== strings whose reference count changed: (text, change) x services")
            by_delta: dict[int, int] = defaultdict(int)
            for (_text, delta), n in STRINGS.items():
                by_delta[delta] += n
            print("   by change:", sorted(by_delta.items(), key=lambda kv: -kv[1])[:15])
            for (text, delta), n in sorted(STRINGS.items(), key=lambda kv: -kv[1])[:60]:
                print(f"   {n:3} {delta:+4} {text!r}")
        if args.keep:
            print(f"suite left running: TRADING_SOCKET_DIR={dirs.env['TRADING_SOCKET_DIR']}")
            return 0
    finally:
        if not args.keep:
            manager_cli(dirs.env, "stop", timeout_s=300)
            shutil.rmtree(dirs.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
