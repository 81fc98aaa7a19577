"""For tests/benchmarks/mem_breakdown.py only (put first on PYTHONPATH by it): in the zygote, just
before `gc.freeze()`, write the address, size and type of every object it can reach to the file
named by MB_OBJECT_MAP, so that the tool can say which objects a service's copied pages hold."""

import ctypes
import gc
import os
import sys

_freeze = gc.freeze


def _short(path: str) -> str:
    for marker in ("site-packages/", "python3.11/", "wt-mem/", "main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return "/".join(path.split("/")[:2])


def _dump_then_freeze() -> None:
    path = os.environ.get("MB_OBJECT_MAP")
    if path and "services.management.zygote" in sys.modules:
        seen: dict[int, object] = {}
        stack = list(gc.get_objects())
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen[id(obj)] = obj
            extra = gc.get_referents(obj)
            code = getattr(obj, "__code__", None) if not isinstance(obj, type) else None
            if code is not None and hasattr(code, "co_consts"):
                extra.append(code)
            if type(obj).__name__ == "code":
                extra += [
                    obj.co_consts,
                    obj.co_names,
                    obj.co_filename,
                    obj.co_name,
                    obj.co_qualname,
                    obj.co_linetable,
                    obj.co_exceptiontable,
                    obj.co_varnames,
                ]
            stack.extend(o for o in extra if id(o) not in seen)
        with open(path, "w") as f:
            for obj in seen.values():
                t = type(obj)
                pre = 16 if t.__flags__ & (1 << 14) else 0  # Py_TPFLAGS_HAVE_GC: the GC header
                pre += 16 if t.__flags__ & (1 << 4) else 0  # Py_TPFLAGS_MANAGED_DICT (3.11)
                try:
                    size = sys.getsizeof(obj) - (16 if t.__flags__ & (1 << 14) else 0)
                except Exception:
                    size = t.__basicsize__
                name = f"{t.__module__}.{t.__qualname__}"
                if os.environ.get("MB_BY_FILE"):
                    code = (
                        obj
                        if t.__name__ == "code"
                        else getattr(obj, "__code__", None)
                        if t.__name__ == "function"
                        else None
                    )
                    if code is not None:
                        name += " " + _short(code.co_filename)
                f.write(f"{id(obj)} {size} {pre} {name}\n")
                if t is dict:
                    keys = ctypes.c_void_p.from_address(id(obj) + 32).value
                    if keys:
                        log2_size, log2_index, kind = (
                            ctypes.c_uint8.from_address(keys + 8 + i).value for i in range(3)
                        )
                        usable = (2 << log2_size) // 3
                        kb = 32 + (1 << log2_index) + usable * (16 if kind else 24)
                        first = next(iter(obj), None)
                        f.write(f"{keys} {kb} 0 dict-keys len {len(obj) // 100 * 100}+ {str(first)[:20]!r}\n")
        del seen, stack
    _freeze()


gc.freeze = _dump_then_freeze
